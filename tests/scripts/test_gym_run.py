"""experiments/run.py on Gymnasium: Hopper-v5 killed with SIGKILL and resumed gives the
uninterrupted run's metrics; a user's env class trains and, when it does not pickle, resumes from
fresh episodes; W&B offline logging continues the same runs; bad tasks are refused in one line;
every agent's config takes the gym presets."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "experiments", "run.py")
USER_ENVS = os.path.join(ROOT, "tests", "envs")
VOLATILE = ("wall_time", "env_steps_per_s")


def _config(algo="rfm", arg="smoke,gym:Hopper-v5"):
    return "--config=" + os.path.join(ROOT, "experiments", "configs", f"{algo}.py") + ":" + arg


def _env(**extra):
    return {**os.environ, "MUJOCO_GL": "disable", "PYTHONPATH": USER_ENVS, **extra}


def _run(workdir, *flags, config=None, check=True, **env):
    cmd = [sys.executable, RUN, config or _config(), f"--workdir={workdir}", "--progress=false", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(**env))
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _rows(workdir, kind, run):
    with open(os.path.join(workdir, "metrics", f"{kind}_{run}.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in f]


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hopper")
    _run(workdir)
    return str(workdir)


def test_hopper_killed_then_resumed_gives_identical_metrics_and_the_same_wandb_runs(hopper_run, tmp_path):
    """SIGKILL after the step-200 checkpoint (mid-episode: Hopper's episodes end at varying steps),
    then --resume: every row equals the uninterrupted run's.  With --config.wandb=true under
    WANDB_MODE=offline both sessions log to the same two W&B runs (one per seed), grouped by the
    workdir, with the train and eval rows."""
    workdir = tmp_path / "killed"
    cmd = [sys.executable, RUN, _config(), f"--workdir={workdir}", "--progress=false", "--config.wandb=true"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(WANDB_MODE="offline"))
    done, deadline = workdir / "checkpoints" / "200" / "commit_success.txt", time.time() + 300
    while time.time() < deadline and proc.poll() is None and not done.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (workdir / "summary.json").exists()
    out = _run(str(workdir), "--resume", "--config.wandb=true", WANDB_MODE="offline").stdout
    assert "Resumed from" in out and "at env step 200" in out, out[-2000:]
    for run in ("seed0", "seed1"):
        for kind in ("train", "eval"):
            assert _rows(str(workdir), kind, run) == _rows(hopper_run, kind, run), (kind, run)
        run_id = (workdir / "wandb_ids" / f"{run}.txt").read_text().strip()  # made by the first session
        sessions = sorted(glob.glob(str(workdir / "wandb" / f"offline-run-*-{run_id}")))
        assert len(sessions) == 2, sessions  # the killed session and its resume: one W&B run id
        logged = open(glob.glob(os.path.join(sessions[-1], "*.wandb"))[0], "rb").read()
        name = f"{tmp_path.name}/killed/{run}".encode()  # the W&B run's name: <group>/<run>
        for key in (b"train/critic_loss", b"eval/eval_return_mean", b"env_step", name):
            assert key in logged, key


def test_each_training_episode_is_counted_once(tmp_path):
    """gym:user_envs:Recording with a 5-step time limit: every episode returns 5, so each 50-step
    row counts exactly 10 episodes with mean return 5 (train_return is the latest one's)."""
    _run(tmp_path, "--config.task=gym:user_envs:Recording", "--config.env_kwargs={'max_episode_steps': 5}",
         "--config.total_steps=150", "--config.num_seeds=1", config=_config(arg="smoke"))
    rows = _rows(str(tmp_path), "train", "seed0")
    assert [(r["step"], r["train_episodes"], r["train_return_mean"], r["train_return"]) for r in rows] == [
        (50, 10, 5.0, 5.0), (100, 10, 5.0, 5.0), (150, 10, 5.0, 5.0)]
    assert all(r["eval_return_mean"] == 5.0 for r in _rows(str(tmp_path), "eval", "seed0"))


def test_a_users_env_class_trains_and_resumes_fresh_when_it_does_not_pickle(tmp_path):
    """gym:user_envs:Locked (an env class of the user's module, holding a lock): run.py trains on
    it, names it in one line at the first checkpoint, and a resume starts fresh episodes while the
    replay buffer, networks and metrics carry on to the end."""
    task = ["--config.task=gym:user_envs:Locked", "--config.env_kwargs={'max_episode_steps': 50}"]
    first = _run(tmp_path, *task, "--stop_after=200", config=_config(arg="smoke"))
    warnings = [line for line in first.stderr.splitlines() if "cannot be saved" in line]
    assert len(warnings) == 1 and "gym:user_envs:Locked" in warnings[0] and "fresh episodes" in warnings[0]
    second = _run(tmp_path, *task, "--resume", config=_config(arg="smoke"))
    assert "Resumed from" in second.stdout
    rows = _rows(str(tmp_path), "train", "seed0")
    assert [r["step"] for r in rows] == list(range(50, 301, 50)) and rows[-1]["critic_loss"] is not None
    assert json.load(open(tmp_path / "summary.json"))["step"] == 300


@pytest.mark.parametrize("flags, words", [
    (["--config.task=gym:CartPole-v1"], "action space Discrete(2) is not supported"),
    (["--config.task=gym:user_envs:Pixels", "--config.env_kwargs={'max_episode_steps': 5}"],
     "image observations are not supported"),
    (["--config.task=gym:Hopper-v5", "--config.env_kwargs={'no_such_argument': 1}"], "bad config.env_kwargs"),
])
def test_unsupported_gym_tasks_are_refused_in_one_line_before_compiling(flags, words, tmp_path):
    proc = _run(tmp_path / "w", *flags, config=_config(arg="smoke"), check=False)
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Compiling" not in proc.stdout
    assert not (tmp_path / "w").exists()


def test_wandb_without_the_package_is_refused_in_one_line(tmp_path):
    code = ("import runpy, sys; sys.modules['wandb'] = None; "
            f"sys.argv = {[RUN, _config(), f'--workdir={tmp_path}', '--config.wandb=true']!r}; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode != 0 and "pip install 'rfm_jax[wandb]'" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("algo", ["rfm", "rfm_diffusion", "qne", "dqs", "qsm", "qvpo", "sac"])
def test_every_agents_config_takes_the_gym_presets(algo, run_script):
    """:gym:<id> is the Gym-MuJoCo protocol and :cpu,gym:<id> the cpu preset at 100k steps; both
    build the agent on the env (a dry run: nothing compiles)."""
    import importlib

    from rfm_jax.training.run import run

    configs = importlib.import_module(f"configs.{algo}")
    protocol = configs.get_config("gym:Walker2d-v5")
    assert (protocol.total_steps, protocol.eval_every, protocol.eval_episodes) == (1_000_000, 10_000, 10)
    assert 5_000 <= protocol.warmup_steps <= 10_000
    cpu = configs.get_config("cpu,gym:Hopper-v5")
    assert cpu.task == "gym:Hopper-v5" and cpu.total_steps == 100_000 and cpu.eval_episodes == 10
    report = run(cpu, None, dry_run=True)
    assert report["task"] == "gym:Hopper-v5" and report["params"]["actor"] > 0


def test_load_policy_acts_on_a_gym_runs_checkpoint(hopper_run):
    import numpy as np

    from rfm_jax import envs
    from rfm_jax.training.policy import load_policy

    policy = load_policy(hopper_run, run="seed1")
    obs = envs.make("gym:Hopper-v5", [0], 1).reset()[0]
    action = np.asarray(policy(obs))
    assert policy.step == 300 and action.shape == (1, 3) and np.all(np.abs(action) <= 1)
