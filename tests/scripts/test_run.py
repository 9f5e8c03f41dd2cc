"""End to end: experiments/run.py with the smoke preset writes every output, resumes exactly, and
rejects bad configs before compiling anything."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
    sessions = json.load(open(os.path.join(full_run, summary["provenance"])))
    import jax

    import rfm_jax

    assert sessions[0]["rfm_jax"] == rfm_jax.__version__ and sessions[0]["jax"] == jax.__version__
    assert sessions[0]["backend"] == "cpu" and sessions[0]["devices"]
    assert any(arg.startswith("--config=") for arg in sessions[0]["command"]) and sessions[0]["resume"] is False
    assert "git_commit" in sessions[0]  # None outside a git checkout


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
    sessions = json.load(open(workdir / "provenance.json"))
    assert [s["resume"] for s in sessions] == [False, True, True]
    assert "--stop_after=250" in sessions[1]["command"]


def test_resume_skips_a_corrupted_newest_checkpoint_and_reproduces_the_run(full_run, tmp_path):
    """256 random bytes written over the newest checkpoint's largest state file: --resume names it,
    sets it aside, resumes from the checkpoint before, and ends with the uninterrupted run's metrics."""
    import shutil

    workdir = tmp_path / "corrupt"
    shutil.copytree(full_run, workdir)
    files = [os.path.join(root, f) for root, _, fs in os.walk(workdir / "checkpoints" / "300" / "state") for f in fs]
    target = max(files, key=os.path.getsize)
    with open(target, "r+b") as f:
        f.seek(os.path.getsize(target) // 2)
        f.write(np.random.default_rng(0).bytes(256))
    proc = _run(str(workdir), "--resume")
    assert "checkpoints/300 is unusable" in proc.stdout and "Resumed from" in proc.stdout, proc.stdout[-2000:]
    assert "at env step 200" in proc.stdout
    assert os.path.isdir(str(workdir / "checkpoints") + "_unusable")
    for seed in (0, 1):
        for kind in ("train", "eval"):
            assert _rows(str(workdir), kind, seed) == _rows(full_run, kind, seed), (kind, seed)


def test_existing_workdir_needs_resume_and_resume_refuses_other_fields(full_run, tmp_path):
    proc = _run(full_run, check=False)
    assert proc.returncode != 0 and "--resume" in proc.stderr
    proc = _run(full_run, "--resume", "--config.agent.actor_width=32", check=False)  # names the nested field
    assert proc.returncode != 0 and "agent.actor_width (16 -> 32)" in proc.stderr, proc.stderr[-1000:]
    (tmp_path / "a_file").write_text("")
    proc = _run(str(tmp_path / "a_file"), check=False)
    assert proc.returncode != 0 and "--workdir=" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(full_run, "--resume", "--config.total_steps=200", check=False)
    assert proc.returncode != 0 and "total_steps (200) is below the newest checkpoint's step (300)" in proc.stderr


def test_resume_refuses_a_garbled_or_missing_run_file_in_one_line(full_run, tmp_path):
    """A workdir whose config.json is garbled, or whose setup.json is gone: exit 2, one line naming the file."""
    import shutil

    workdir = tmp_path / "damaged"
    shutil.copytree(full_run, workdir)
    (workdir / "config.json").write_text('{"task": "cartpole-sw')
    proc = _run(str(workdir), "--resume", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"run.py: --resume: {workdir}/config.json is not valid JSON "
                                                "(Unterminated string starting at: line 1 column 10); restore it, "
                                                "or start afresh in another --workdir"], proc.stderr[-2000:]
    shutil.copy(os.path.join(full_run, "config.json"), workdir / "config.json")
    os.remove(workdir / "setup.json")
    proc = _run(str(workdir), "--resume", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"run.py: --resume: {workdir}/setup.json is missing; restore it, or start afresh in another --workdir"]


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
        ({"agent.actor_lr": float("inf")}, "config.agent.actor_lr"),
        ({"hyper.eta": float("nan")}, "config.hyper.eta"),
        ({"hyper.ridge": float("inf")}, "config.hyper.ridge"),
        ({"warmup_steps": 400}, "config.warmup_steps"),  # beyond total_steps (300)
        ({"agent.temperature_mode": "auto"}, "config.agent.temperature_mode"),
        ({"hyper.ess_target": 2.0}, "config.hyper.ess_target"),
        ({"agent.temperature_mode": "ess", "hyper.temperature_final": 0.01}, "config.hyper.temperature_final"),
    ],
)
def test_every_bad_field_is_named_by_validate_or_setup(overrides, field, run_script):
    """The same checks as above in-process (``rfm_jax.training.run.validate``, then the agent's
    checks in ``setup``); ``run_script`` puts experiments/ on sys.path for ``configs``."""
    from configs import rfm

    from rfm_jax.infra.guards import UserError
    from rfm_jax.training.run import setup, validate

    config = rfm.get_config("smoke")
    config.update_from_flattened_dict(overrides)
    message = "\n".join(validate(config))
    if not message:
        with pytest.raises(UserError) as error:
            setup(config)
        message = str(error.value)
    assert field in message, message


def _fake_workdir(path, task, algo, curves):
    """A run.py-shaped workdir: setup.json and eval_<run>.jsonl from {run: [(step, return), ...]}."""
    os.makedirs(path / "metrics")
    json.dump({"task": task, "algo": algo, "runs": list(curves)}, open(path / "setup.json", "w"))
    for run, rows in curves.items():
        with open(path / "metrics" / f"eval_{run}.jsonl", "w") as f:
            for step, value in rows:
                f.write(json.dumps({"step": step, "wall_time": step / 10, "eval_return_mean": value}) + "\n")


def test_a_diverging_run_stops_naming_the_metric_and_keeps_its_last_good_checkpoint(tmp_path):
    """critic_lr = 1e8 drives the losses to NaN: the run exits 1 with one line naming the metric, run
    and env step; no checkpoint at or after that step is written; summary.json is never half-NaN."""
    proc = _run(str(tmp_path / "nan"), "--config.agent.critic_lr=1e8", "--config.checkpoint_every=50", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = [x for x in proc.stderr.splitlines() if x.startswith("run.py: non-finite")]
    assert len(line) == 1 and " in run seed" in line[0] and "at env step" in line[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    step = int(line[0].split("at env step ")[1].split(";")[0])
    saved = sorted(int(d) for d in os.listdir(tmp_path / "nan" / "checkpoints") if d.isdigit())
    assert saved and saved[-1] < step and f"last good checkpoint is step {saved[-1]}" in line[0]
    assert not os.path.exists(tmp_path / "nan" / "summary.json")
    proc = _run(str(tmp_path / "nan"), "--resume", "--config.agent.critic_lr=1e-3", "--config.checkpoint_every=50")
    assert "agent.critic_lr changes from 100000000.0 to 0.001 (allowed on resume)" in proc.stdout, proc.stdout[-2000:]
    summary = json.load(open(tmp_path / "nan" / "summary.json"))
    assert summary["step"] == 300 and all(v is not None for v in summary["last_eval"])


def test_plot_groups_workdirs_and_names_its_intervals(full_run, tmp_path):
    """plot.py on a run.py workdir (2 seeds) and a compare.py-shaped grid (6 seeds, 2 tasks, one
    metrics file resumed with a repeated step and one cut mid-line): curves, aggregates and
    profiles as PNG and PDF, and tables whose intervals say what they are."""
    grid = tmp_path / "grid"
    for task, offset in (("cartpole-swingup", 0.0), ("cartpole-balance", 100.0)):
        curves = {f"seed{i}": [(0, 10.0), (100, 100.0 + offset + i), (200, 200.0 + offset + 10 * i)] for i in range(6)}
        curves["seed0"] = curves["seed0"][:2] + [(100, 150.0 + offset), (200, 200.0 + offset)]  # resumed at 100
        _fake_workdir(grid / "mine" / task, task, "rfm", curves)
    with open(grid / "mine" / "cartpole-swingup" / "metrics" / "eval_seed5.jsonl", "a") as f:
        f.write('{"step": 300, "wall_ti')  # a run writing its next row
    out = tmp_path / "plots"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "plot.py"), full_run, str(grid),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {(r["group"], r["task"]): r for r in csv.DictReader(open(out / "results.csv"))}
    mine = rows[("mine", "cartpole-swingup")]
    assert mine["seeds"] == "6" and mine["env_steps"] == "200" and mine["interval"] == "95 % bootstrap CI, 6 seeds"
    assert mine["final_per_seed"].split()[:2] == ["200.0", "210.0"]
    assert float(mine["final_low"]) <= float(mine["final_mean"]) == 225.0 <= float(mine["final_high"])
    smoke = rows[("rfm", "cartpole-swingup")]
    assert smoke["seeds"] == "2" and smoke["interval"] == "min-max of 2 seeds" and smoke["env_steps"] == "300"
    finals = [float(v) for v in smoke["final_per_seed"].split()]
    assert np.allclose([float(smoke["final_low"]), float(smoke["final_high"])], [min(finals), max(finals)], atol=0.06)
    aggregate = list(csv.DictReader(open(out / "aggregate.csv")))
    assert {(r["group"], r["metric"], r["tasks"]) for r in aggregate} == {("mine", "IQM", "2"), ("mine", "mean", "2")}
    for name in ("curves_cartpole-swingup", "curves_cartpole-balance", "aggregate", "profile"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    assert "min-max of 2 seeds" in (out / "results.md").read_text()


def test_dry_run_prints_the_reference_network_sizes_and_exits(tmp_path):
    config = "--config=" + os.path.join(ROOT, "experiments", "configs", "rfm.py") + ":cheetah-run"
    proc = subprocess.run([sys.executable, RUN, config, "--dry_run"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["params"] == {"actor": 204_806, "critics": 2 * 72_193}
    assert 29.5 < report["gmac"]["total"] < 30.0  # docs/method.md section 7.2 (argmin-only input gradient)
    assert "actor 204,806" in proc.stdout and os.listdir(tmp_path) == []  # nothing written, nothing trained


def test_load_policy_acts_with_a_runs_checkpoint(full_run):
    from rfm_jax.training.policy import load_policy

    policy = load_policy(full_run, run="seed1")
    assert policy.run == "seed1" and policy.step == 300
    obs = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    actions = np.asarray(policy(obs))
    assert actions.shape == (3, 1) and np.all(np.abs(actions) <= 1)
    np.testing.assert_array_equal(np.asarray(policy(obs)), actions)  # the same key gives the same actions
    assert np.asarray(policy(obs[0])).shape == (1,)
    from rfm_jax.training.policy import _act

    misses = _act.cache_info().misses
    for _ in range(3):  # a policy called every env step compiles once
        policy(obs[0])
    assert _act.cache_info().misses == misses
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
    assert rows[0].startswith("group,task,seeds,env_steps,final_mean") and len(rows) == 3
    assert "min-max of 1 seeds" in table and "95 %" not in table.split("Across tasks")[0]
    for name in ("curves_cartpole-swingup", "aggregate", "profile"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2


@pytest.mark.parametrize("algo, task", [("qne", "cartpole-swingup"), ("dqs", "cartpole-swingup"),
                                        ("qvpo", "gym:Hopper-v5"), ("qsm", "gym:Hopper-v5")])
def test_every_other_agent_runs_its_smoke_preset(algo, task, tmp_path):
    """The agents not run above (rfm: full_run, sac: the sweep) through run.py, on DMC and on
    Gymnasium: every output written.  They ask for videos with no renderer (MUJOCO_GL=disable):
    one warning, and training goes on."""
    config = "--config=" + os.path.join(ROOT, "experiments", "configs", f"{algo}.py") + f":smoke,{task}"
    cmd = [sys.executable, RUN, config, f"--workdir={tmp_path}", "--progress=false", "--config.num_seeds=1",
           "--config.total_steps=150", "--config.video=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("video off: rendering failed") == 1 and "MUJOCO_GL=disable" in proc.stderr
    assert not os.path.exists(tmp_path / "videos")
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["algo"] == algo and summary["runs"] == ["seed0"]
    rows = [json.loads(line) for line in open(tmp_path / "metrics" / "train_seed0.jsonl")]
    assert rows[-1]["step"] == 150 and rows[-1]["critic_loss"] is not None and rows[-1]["actor_loss"] is not None
    assert [json.loads(line)["step"] for line in open(tmp_path / "metrics" / "eval_seed0.jsonl")] == [0, 150]
    assert os.path.isdir(tmp_path / "checkpoints" / "150")


def test_an_automatic_temperature_sweeps_its_target_is_logged_and_resumes_exactly(tmp_path):
    """temperature_mode=ess with a sweep of two ESS targets (one program): lambda moves apart for the
    two targets and is logged in every row; stopped at step 150 and resumed, the run writes the
    uninterrupted run's rows exactly (lambda is in the checkpointed state)."""
    flags = ["--config.num_seeds=1", "--config.agent.temperature_mode=ess", "--config.sweep.ess_target=0.2,0.9",
             "--config.hyper.temperature_lr=0.01"]
    _run(str(tmp_path / "whole"), *flags)
    _run(str(tmp_path / "parts"), *flags, "--stop_after=150")
    _run(str(tmp_path / "parts"), *flags, "--resume")
    runs = json.load(open(tmp_path / "whole" / "setup.json"))["runs"]
    assert runs == ["seed0_ess_target0.2", "seed0_ess_target0.9"]
    lams = {}
    for run in runs:
        for kind in ("train", "eval"):
            whole = _rows(str(tmp_path / "whole"), kind, run.removeprefix("seed"))
            assert _rows(str(tmp_path / "parts"), kind, run.removeprefix("seed")) == whole, (run, kind)
        rows = _rows(str(tmp_path / "whole"), "train", run.removeprefix("seed"))
        lams[run] = [r["temperature"] for r in rows if "temperature" in r]  # rows after the warm-up
        assert len(lams[run]) >= 3 and all("policy_ess_frac" in r for r in rows[-3:])
    low, high = lams.values()
    assert low[-1] < low[0] < 0.02 < high[0] < high[-1], lams  # a low ESS target cools lambda, a high one heats it
