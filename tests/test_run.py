"""End to end: experiments/run.py with the smoke preset writes every output, resumes exactly, and
rejects bad configs before compiling anything."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "experiments", "run.py")
CONFIG = "--config=" + os.path.join(ROOT, "experiments", "configs", "rfm.py") + ":smoke"
VOLATILE = ("wall_time", "env_steps_per_s")  # timing, not results


def _run(workdir, *flags, check=True):
    cmd = [sys.executable, RUN, CONFIG, f"--workdir={workdir}", "--progress=false", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "disable"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _rows(workdir, kind, seed):
    with open(os.path.join(workdir, "metrics", f"{kind}_seed{seed}.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in f]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    # Leftovers of a run killed before its first checkpoint: they must not leak into this run.
    (workdir / "checkpoints").mkdir()
    (workdir / "metrics").mkdir()
    (workdir / "metrics" / "train_seed0.jsonl").write_text('{"step": 999, "wall_time": 1.0}\n')
    _run(str(workdir))
    return str(workdir)


def test_smoke_run_writes_every_output(full_run):
    config = json.load(open(os.path.join(full_run, "config.json")))
    assert config["task"] == "cartpole-swingup" and config["num_seeds"] == 2
    for seed in (0, 1):
        train, evals = _rows(full_run, "train", seed), _rows(full_run, "eval", seed)
        assert [r["step"] for r in train] == list(range(50, 301, 50))
        assert [r["step"] for r in evals] == [0, 150, 300]
        assert all(r["eval_return_mean"] is not None and r["eval_return_std"] is not None for r in evals)
        last = train[-1]
        for key in ("critic_loss", "actor_loss", "ess_mean", "coef_abs_mean", "q_mean", "physics_errors"):
            assert last[key] is not None, key
        events = os.listdir(os.path.join(full_run, "tb", f"seed{seed}"))
        assert any(f.startswith("events.out.tfevents") for f in events)
    steps = sorted(int(d) for d in os.listdir(os.path.join(full_run, "checkpoints")) if d.isdigit())
    assert steps[-1] == 300
    assert {"state", "host", "meta"} <= set(os.listdir(os.path.join(full_run, "checkpoints", "300")))
    summary = json.load(open(os.path.join(full_run, "summary.json")))
    assert summary["step"] == 300 and len(summary["last_eval"]) == 2


def test_sigterm_then_resume_gives_identical_metrics(full_run, tmp_path):
    """SIGTERM mid-run saves a checkpoint at the current step; --resume then reproduces the
    uninterrupted run's metrics exactly (env states, replay, keys and running sums included)."""
    workdir = tmp_path / "killed"
    cmd = [sys.executable, RUN, CONFIG, f"--workdir={workdir}", "--progress=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MUJOCO_GL": "disable"})
    path, deadline = workdir / "metrics" / "train_seed0.jsonl", time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # the 150 row precedes a ~1 s evaluation
        if path.exists() and '"step": 150,' in path.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    assert 150 <= steps[-1] < 250 and steps[-1] not in (100, 200), steps  # saved at the signal
    _run(str(workdir), "--resume", "--stop_after=250")  # a second session, ended by --stop_after
    assert max(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == 250
    _run(str(workdir), "--resume")
    for seed in (0, 1):
        for kind in ("train", "eval"):
            assert _rows(str(workdir), kind, seed) == _rows(full_run, kind, seed), (kind, seed)


def test_existing_workdir_needs_resume_and_resume_needs_a_run(full_run, tmp_path):
    proc = _run(full_run, check=False)
    assert proc.returncode != 0 and "--resume" in proc.stderr
    proc = _run(str(tmp_path / "empty"), "--resume", check=False)
    assert proc.returncode != 0 and "no checkpoints" in proc.stderr


@pytest.mark.parametrize(
    "flag, field",
    [
        ("--config.task=cheetah-sprint", "config.task"),  # run.py's own check
        ("--config.agent.num_posterior_particles=0", "config.agent.num_posterior_particles"),  # the factory's
        ("--config.sweep.actor_width=8,16", "config.sweep.actor_width"),  # a static field swept
    ],
)
def test_invalid_config_fails_before_compiling(tmp_path, flag, field):
    proc = _run(str(tmp_path / "bad"), flag, check=False)
    assert proc.returncode != 0 and field in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not os.path.exists(tmp_path / "bad")


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"batch_size": 5000}, "config.batch_size"),
        ({"hyper.temperature": 0.0}, "config.hyper.temperature"),
        ({"eval_mode": "random"}, "config.eval_mode"),
        ({"agent.num_eval_particles": 0}, "config.agent.num_eval_particles"),
        ({"agent.actor_block": "wide"}, "config.agent.actor_block"),
        ({"sweep.temperature": "0.1,x"}, "config.sweep.temperature"),
        ({"sweep.temperature": "0.1,-0.1"}, "config.hyper.temperature"),
        ({"algo": "ppo"}, "config.algo"),
    ],
)
def test_every_bad_field_is_named_by_validate_or_setup(overrides, field, run_script):
    """The same checks as above in-process (run.validate, then the agent's checks in run.setup)."""
    from absl import app
    from configs import rfm

    run_py = run_script

    config = rfm.get_config("smoke")
    config.update_from_flattened_dict(overrides)
    message = "\n".join(run_py.validate(config))
    if not message:
        with pytest.raises(app.UsageError) as error:
            run_py.setup(config)
        message = str(error.value)
    assert field in message, message


def test_plot_curves_writes_png_and_returns(full_run, tmp_path):
    script = os.path.join(ROOT, "experiments", "plot_curves.py")
    proc = subprocess.run([sys.executable, script, "--workdir", full_run, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.load(open(tmp_path / "returns.json"))
    assert summary["steps"] == [0, 150, 300] and len(summary["final_per_seed"]) == 2
    lo, hi = summary["final_ci95"]
    assert lo <= summary["final_mean"] <= hi
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_dry_run_prints_the_reference_network_sizes_and_exits(tmp_path):
    config = "--config=" + os.path.join(ROOT, "experiments", "configs", "rfm.py") + ":cheetah-run"
    proc = subprocess.run([sys.executable, RUN, config, "--dry_run"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["params"] == {"actor": 204_806, "critics": 2 * 72_193}
    assert 31.0 < report["gmac"]["total"] < 32.0  # docs/method.md section 7.2
    assert "actor 204,806" in proc.stdout and os.listdir(tmp_path) == []  # nothing written, nothing trained


def test_load_policy_acts_with_a_runs_checkpoint(full_run):
    import numpy as np

    from rfm_jax.policy import load_policy

    policy = load_policy(full_run, run="seed1")
    assert policy.run == "seed1" and policy.step == 300
    obs = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    actions = np.asarray(policy(obs))
    assert actions.shape == (3, 1) and np.all(np.abs(actions) <= 1)
    np.testing.assert_array_equal(np.asarray(policy(obs)), actions)  # the same key gives the same actions
    assert np.asarray(policy(obs[0])).shape == (1,)
    with pytest.raises(ValueError, match="no run 'seed7'"):
        load_policy(full_run, run="seed7")


def test_another_agent_and_a_sweep_run_as_one_program(tmp_path):
    """SAC's smoke preset with 1 seed x 2 swept values: one run.py call, outputs per run, HParams."""
    config = "--config=" + os.path.join(ROOT, "experiments", "configs", "sac.py") + ":smoke"
    workdir = tmp_path / "sweep"
    cmd = [sys.executable, RUN, config, f"--workdir={workdir}", "--progress=false", "--config.num_seeds=1",
           "--config.total_steps=150", "--config.sweep.init_alpha=0.1,1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(workdir / "summary.json"))
    assert summary["algo"] == "sac" and summary["runs"] == ["seed0_init_alpha0.1", "seed0_init_alpha1"]
    for name in summary["runs"]:
        rows = [json.loads(line) for line in open(workdir / "metrics" / f"train_{name}.jsonl")]
        assert rows[-1]["step"] == 150 and rows[-1]["critic_loss"] is not None and rows[-1]["alpha"] > 0
        evals = [json.loads(line) for line in open(workdir / "metrics" / f"eval_{name}.jsonl")]
        assert [r["step"] for r in evals] == [0, 150]
        files = [f for _, _, fs in os.walk(workdir / "tb" / name) for f in fs]
        assert len([f for f in files if f.startswith("events.out.tfevents")]) >= 2  # scalars and HParams
    alphas = [json.loads(open(workdir / "metrics" / f"train_{n}.jsonl").readlines()[-1])["alpha"]
              for n in summary["runs"]]
    assert alphas[0] < alphas[1]  # each run trains with its own value


def test_compare_runs_a_grid_and_writes_a_table_and_curves(tmp_path):
    """Two agents x one task x 1 seed through compare.py: run.py workdirs, results.md/.csv, a figure;
    a second call skips the finished runs."""
    script = os.path.join(ROOT, "experiments", "compare.py")
    cmd = [sys.executable, script, "--out", str(tmp_path), "--tasks", "cartpole-swingup", "--seeds", "1",
           "--total_steps", "150", "--algo", "rfm=rfm:smoke --progress=false",
           "--algo", "sac=sac:smoke --progress=false"]
    env = {**os.environ, "MUJOCO_GL": "disable"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "results.md").read_text()
    assert "| rfm | cartpole-swingup | 1 | 150 |" in table and "| sac | cartpole-swingup | 1 | 150 |" in table
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("algo,task,runs,env_steps,final_mean") and len(rows) == 3
    assert (tmp_path / "curves_cartpole-swingup.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2


@pytest.mark.parametrize("algo", ["qne"])
def test_every_other_agent_runs_its_smoke_preset(algo, tmp_path):
    """The agents not run above (rfm: full_run, sac: the sweep) through run.py: every output written."""
    config = "--config=" + os.path.join(ROOT, "experiments", "configs", f"{algo}.py") + ":smoke"
    cmd = [sys.executable, RUN, config, f"--workdir={tmp_path}", "--progress=false", "--config.num_seeds=1",
           "--config.total_steps=150"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["algo"] == algo and summary["runs"] == ["seed0"]
    rows = [json.loads(line) for line in open(tmp_path / "metrics" / "train_seed0.jsonl")]
    assert rows[-1]["step"] == 150 and rows[-1]["critic_loss"] is not None and rows[-1]["actor_loss"] is not None
    assert [json.loads(line)["step"] for line in open(tmp_path / "metrics" / "eval_seed0.jsonl")] == [0, 150]
    assert os.path.isdir(tmp_path / "checkpoints" / "150")
