"""A user's env that misbehaves, through experiments/run.py (the SAC smoke preset on
``gym:user_envs:<Class>`` with a 50-step time limit, checkpoints every 100 steps): one line naming
the task, the run, the env step and what went wrong, then the env's own frames and none of
rfm_jax's; exit status 3; the last good checkpoint kept; and ``--resume`` once the env is fixed
(``USER_ENVS_FIXED`` set) continuing from it.  The faults start at the env's 250th step, so a run
resumed from step 200 equals a run of the fixed env from the start, row by row."""

import json
import os
import socket
import subprocess
import sys

import pytest

from rfm_jax.infra.metrics import read_workdir

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "experiments", "run.py")
USER_ENVS = os.path.join(ROOT, "tests", "envs")
CONFIG = "--config=" + os.path.join(ROOT, "experiments", "configs", "sac.py") + ":smoke"


def _run(workdir, env_class, *flags, fixed=False):
    cmd = [sys.executable, RUN, CONFIG, f"--config.task=gym:user_envs:{env_class}",
           "--config.env_kwargs={'max_episode_steps': 50}", f"--workdir={workdir}", "--progress=false", *flags]
    env = {**os.environ, "MUJOCO_GL": "disable", "PYTHONPATH": USER_ENVS}
    env.pop("USER_ENVS_FIXED", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**env, **({"USER_ENVS_FIXED": "1"} if fixed else {})})


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _metrics(workdir):
    return read_workdir(str(workdir))


def _checkpoints(workdir):
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory):
    """The env as its user fixed it, run uninterrupted (the faulty classes behave alike when fixed)."""
    workdir = tmp_path_factory.mktemp("fixed")
    _ok(_run(workdir, "RaisesLater", fixed=True))
    return str(workdir)


def _stopped_in_one_line(proc, words):
    """The first stderr line names the failure and the checkpoint; what follows is the env's traceback."""
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-3000:])
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines[0].startswith("run.py: gym:user_envs:") and words in lines[0], lines[0]
    assert "nothing was saved after checkpoint step 200: --resume continues from it once the env is fixed" in lines[0]
    return lines


@pytest.mark.parametrize("env_class, words, traceback", [
    ("RaisesLater", "env.step raised ConnectionError: the simulator server went away (training, env step 250, "
                    "run seed0, env 0)", True),
    ("GrowsLater", "env.step returned an observation of shape (6,) where its observation_space declares (2,) "
                   "(training, env step 250, run seed0, env 0)", False),
])
def test_a_failing_env_stops_in_one_line_and_resumes_from_the_last_good_checkpoint(env_class, words, traceback,
                                                                                   fixed_run, tmp_path):
    proc = _run(tmp_path, env_class)
    lines = _stopped_in_one_line(proc, words)
    if traceback:  # the user's own frames, none of rfm_jax's or Gymnasium's wrappers
        assert lines[1] == "Traceback (most recent call last):" and lines[-1].startswith("ConnectionError: ")
        frames = [x for x in lines if x.startswith("  File ")]
        assert frames and all("user_envs.py" in x for x in frames), lines
    else:
        assert len(lines) == 1, lines
    assert _checkpoints(tmp_path) == [100, 200] and not (tmp_path / "summary.json").exists()
    resumed = _ok(_run(tmp_path, env_class, "--resume", fixed=True))
    assert "Resumed from" in resumed.stdout and "at env step 200" in resumed.stdout
    assert _metrics(str(tmp_path)) == _metrics(fixed_run)


def test_an_env_that_returns_nan_for_good_stops_at_the_bound_and_resumes(tmp_path):
    """NaN observations from the env's 120th step: every step is invalid, and the 101st invalid one
    of an env's last 1000 (step 220) stops the run; resumed from step 200 once fixed, no step is
    invalid any more, so the count of invalid steps stays at step 200's."""
    proc = _run(tmp_path, "NanLater")
    lines = _stopped_in_one_line(proc, "101 of the env's last 1000 steps were invalid")
    assert len(lines) == 1 and "(training, env step 220, run seed0, env 0)" in lines[0], lines
    assert _checkpoints(tmp_path) == [100, 200]
    _ok(_run(tmp_path, "NanLater", "--resume", fixed=True))
    rows = _metrics(str(tmp_path))["train_seed0.jsonl"]
    assert [(r["step"], r["physics_errors"]) for r in rows] == [
        (50, 0), (100, 0), (150, 31), (200, 81), (250, 81), (300, 81)]
    assert json.load(open(tmp_path / "summary.json"))["physics_errors"] == [81, 81]


def test_the_old_gym_api_is_refused_in_one_line_before_compiling(tmp_path):
    proc = _run(tmp_path / "w", "OldApi")
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert "reset() returned a numpy.ndarray, not (obs, info): it follows the old Gym API" in lines[0]
    assert "Compiling" not in proc.stdout and not (tmp_path / "w").exists()


def test_undecodable_bytes_in_a_metrics_file_are_dropped_on_resume(fixed_run, tmp_path):
    """A session stopped at step 200, its train metrics then hold bytes that are not UTF-8 between
    two rows: --resume drops that line, says so, and ends with the uninterrupted run's rows."""
    _ok(_run(tmp_path, "RaisesLater", "--stop_after=200", fixed=True))
    path = tmp_path / "metrics" / "train_seed1.jsonl"
    rows = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(rows[:2]) + b"\xff\xfe\x00{\"step\": 9\x81}\n" + b"".join(rows[2:]))
    resumed = _ok(_run(tmp_path, "RaisesLater", "--resume", fixed=True))
    assert f"Dropped 1 unreadable line(s) of {path}" in resumed.stdout
    assert _metrics(str(tmp_path)) == _metrics(fixed_run)


def test_an_env_failing_in_the_first_evaluation_stops_before_any_checkpoint(fixed_run, tmp_path):
    proc = _run(tmp_path, "RaisesInEvaluation")
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 3 and lines[0].startswith("run.py: gym:user_envs:RaisesInEvaluation: env.step raised "
                                                        "FloatingPointError: the evaluation arena has no floor "
                                                        "(evaluation, env step 0, run seed0, env 0); "
                                                        "no checkpoint was saved: --resume starts from step 0"), lines
    assert lines[-1] == "FloatingPointError: the evaluation arena has no floor" and _checkpoints(tmp_path) == []
    _ok(_run(tmp_path, "RaisesInEvaluation", "--resume", fixed=True))
    assert _metrics(str(tmp_path)) == _metrics(fixed_run)


def test_with_two_processes_an_env_failing_in_one_stops_both_at_the_same_step(tmp_path):
    """4 runs over 2 processes (seeds 2 and 3 in process 1): run seed3's env raises at step 250;
    process 1 names it, process 0 says another process's env failed, both exit 3 at step 250."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MUJOCO_GL": "disable", "PYTHONPATH": USER_ENVS}
    env.pop("USER_ENVS_FIXED", None)
    pair = [subprocess.Popen([sys.executable, RUN, CONFIG, "--config.task=gym:user_envs:RaisesForSeed3",
                              "--config.env_kwargs={'max_episode_steps': 50}", f"--workdir={tmp_path}",
                              "--progress=false", "--config.num_seeds=4", f"--coordinator=localhost:{port}",
                              "--num_processes=2", f"--process_id={i}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in pair]
    assert [p.returncode for p in pair] == [3, 3], errors
    first = [[x for x in err.splitlines() if x.startswith("run.py: ")][0] for err in errors]
    assert "an env of another process failed (see its log) (training, env step 250)" in first[0], first
    assert "env.step raised ConnectionError: run 3's simulator went away (training, env step 250, run seed3" in first[1]
    assert _checkpoints(tmp_path) == [100, 200]
