"""Both experiment scripts run end to end (their --quick settings) and write JSON + PNG."""

import json
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "script, extra",
    [("estimator_variance", ["--critic"]), ("toy2d", ["--modes", "none,optimal", "--steps", "60", "--chunk", "30"])],
)
def test_experiment_quick_run_writes_outputs(tmp_path, script, extra, request):
    """estimator_variance.py also builds a trained-critic target from the smoke run's checkpoint."""
    if extra == ["--critic"]:
        extra = ["--critic", f"smoke={request.getfixturevalue('full_run')}"]
    cmd = [sys.executable, str(ROOT / "experiments" / f"{script}.py"), "--quick", "--out", str(tmp_path), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    record = json.loads((tmp_path / f"{script}.json").read_text())
    assert record, "empty JSON record"
    if script == "estimator_variance":
        critic = record["targets"]["smoke"]
        assert "trained critic of cartpole-swingup" in critic["description"]
        assert all(m in critic["vs_time"] for m in ("none", "optimal_data_clip2", "safe_isotropic"))
    png = (tmp_path / f"{script}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bench_update_runs_with_an_override_and_a_profile(tmp_path):
    """bench_update.py at the cpu preset: --set reaches the agent and the JSON, --profile finds no
    device plane on CPU (null), --host_tasks times a Gymnasium env's host step too, the CPU model is
    recorded, and the last printed line is one JSON object with ms_per_env_step."""
    cmd = [sys.executable, str(ROOT / "experiments" / "bench_update.py"), "--numerics", "cpu", "--seeds", "1",
           "--no-breakdown", "--min_time", "0.2", "--set", "sample_chunk=0", "--set", "particle_batch=2",
           "--profile", "--host_tasks", "gym:Hopper-v5", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["ms_per_env_step"] > 0 and last["overrides"] == {"sample_chunk": 0, "particle_batch": 2}
    saved = json.loads((tmp_path / "bench_cpu.json").read_text())
    row = saved["rows"][0]
    assert row["device_profile"] is None and row["overrides"] == last["overrides"]
    assert row["host_env_ms_by_task"]["gym:Hopper-v5"] > 0 and "family" in saved["cpu_model"]


def test_bench_update_rejects_a_bad_override():
    cmd = [sys.executable, str(ROOT / "experiments" / "bench_update.py"), "--set", "sample_chunk"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "argument --set: expected KEY=VALUE, got 'sample_chunk'" in proc.stderr


def test_official_script_uses_the_cpu_preset(run_script):
    """experiments/official.py trains the authors' code at rfm.py:cpu's numerics: its PRESET (stated
    again there, since it runs in their environment without rfm_jax) must match the config."""
    import importlib.util

    from configs import rfm

    spec = importlib.util.spec_from_file_location("official", ROOT / "experiments" / "official.py")
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    c = rfm.get_config("cpu")
    c.update_from_flattened_dict(rfm.PAPER)  # the authors' estimator and fixed lambda (the cpu default: ess, safe)
    preset = official.PRESET
    for field in ("total_steps", "warmup_steps", "batch_size", "replay_capacity", "eval_every"):
        assert preset[field] == c[field], field
    for field in ("num_posterior_particles", "num_train_particles", "num_act_particles", "num_eval_particles",
                  "num_ode_steps", "actor_width", "actor_blocks", "actor_embed_dim", "actor_lr", "critic_lr",
                  "grad_clip", "t_min"):
        assert preset[field] == c.agent[field], field
    assert tuple(preset["critic_hidden"]) == tuple(c.agent.critic_hidden)
    for field in ("temperature", "gamma", "tau", "ridge", "clip"):
        assert preset[field] == c.hyper[field], field
    assert c.hyper.temperature_final is None and c.agent.policy == "flow" and c.agent.control_variate == "optimal"
    assert c.agent.temperature_mode == "fixed"
    from rfm_jax.envs.dmc import env_seed

    assert [official.env_seed(s, e, 1) for s in (0, 4) for e in (0, 9)] == [env_seed(s, e, 1) for s in (0, 4)
                                                                               for e in (0, 9)]
