"""Runs sharded over devices and processes (``rfm_jax.infra.distributed``), on CPU:

* 4 and 8 runs over 4 forced host devices train to the same per-run metrics as the unsharded
  program on one device (a subprocess: the device count is fixed when JAX starts; the 4 runs are
  compared with the 8-run program's runs at the default temperature, which are the same runs);
* two processes on localhost (gloo CPU collectives) train 4 runs together, are killed after their
  first checkpoint, resume, and end with the single-process program's per-run metrics; the
  checkpoint then refuses a resume with another process count.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "experiments", "run.py")
CONFIG = "--config=" + os.path.join(ROOT, "experiments", "configs", "rfm.py") + ":smoke"
VOLATILE = ("wall_time", "env_steps_per_s")


def _rows(workdir, name):
    with open(os.path.join(workdir, "metrics", name)) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in f]


def _assert_close(rows_a, rows_b, what, rtol):
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b], what
    for a, b in zip(rows_a, rows_b, strict=True):
        assert a.keys() == b.keys(), what
        for key in a:
            if a[key] is None or b[key] is None:
                assert a[key] == b[key], (what, key)
            else:  # the initial policy's evaluation: float rounding only
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6 if a["step"] == 0 else rtol, atol=1e-5,
                                           err_msg=f"{what} {key} at step {a['step']}")


# Per-device batch shapes differ between the sharded and unsharded programs (R / D runs against
# R), and XLA's CPU kernels round float32 differently by shape: the first updates' metrics differ
# by 1e-7 - 2e-6 relative, 4e-5 after 100 updates.  Training metrics are compared at 1e-3, and
# greedy evaluation (an argmax over particles, then 1000 chaotic physics steps) at 2e-2: a bug
# that mixed runs up would miss both by far (other seeds' numbers differ by 10-100 %).
TRAIN_RTOL, EVAL_RTOL = 1e-3, 2e-2


def _compare(workdir_a, workdir_b, name, what):
    """Run ``name`` of both workdirs (or the pair (name in a, name in b))."""
    name_a, name_b = name if isinstance(name, tuple) else (name, name)
    for kind, rtol in (("train", TRAIN_RTOL), ("eval", EVAL_RTOL)):
        rows_a, rows_b = _rows(workdir_a, f"{kind}_{name_a}.jsonl"), _rows(workdir_b, f"{kind}_{name_b}.jsonl")
        _assert_close(rows_a, rows_b, f"{what} {kind}", rtol)


SHARDED = textwrap.dedent("""
    import json, os, sys
    import jax
    from rfm_jax.training.loop import RunConfig, build, train
    sys.path.insert(0, os.path.join({root!r}, "experiments"))
    from configs import rfm
    from rfm_jax.agents import config_kwargs
    c = rfm.get_config("smoke")
    out = {{}}
    two, one = {{"temperature": [0.01, 0.02]}}, jax.devices()[:1]
    for name, sweep, devices in [("r4_d4", None, None), ("r8_d4", two, None), ("r8_d1", two, one)]:
        rc = RunConfig.for_task(c.task, num_seeds=4, total_steps=200, warmup_steps=100, batch_size=c.batch_size,
                                replay_capacity=c.replay_capacity, eval_every=200, eval_episodes=1, log_every=50,
                                checkpoint_every=100)
        trained = train(rc, build(rc, "rfm", config_kwargs(c.agent), dict(c.hyper), sweep),
                        workdir=os.path.join({tmp!r}, name), devices=devices)
        out[name] = {{"devices": len(jax.devices() if devices is None else devices),
                      "runs": trained.summary["runs"],
                      "shards": len(jax.tree.leaves(trained.state)[0].sharding.device_set)}}
    from rfm_jax.infra.distributed import Layout
    try:
        Layout.make(6)
    except ValueError as error:
        out["refusal"] = str(error)
    print(json.dumps(out))
""")



def test_runs_sharded_over_four_devices_match_the_unsharded_program(tmp_path):
    env = {**os.environ, "MUJOCO_GL": "disable",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()}
    proc = subprocess.run([sys.executable, "-c", SHARDED.format(root=ROOT, tmp=str(tmp_path))], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["r4_d4"]["shards"] == 4 and out["r8_d4"]["shards"] == 4 and out["r8_d1"]["shards"] == 1
    assert "6 runs" in out["refusal"] and "4 devices" in out["refusal"] and "config.num_seeds" in out["refusal"]
    names = out["r8_d4"]["runs"]
    assert len(names) == 8 and names == out["r8_d1"]["runs"]
    for name in names:  # 8 runs, 2 per device
        _compare(tmp_path / "r8_d4", tmp_path / "r8_d1", name, f"r8 {name}")
    # 4 runs, 1 per device: the unsharded 8-run program's runs at the default temperature (0.02)
    # train the same keys and values (runs of one seed share its key)
    assert out["r4_d4"]["runs"] == [f"seed{s}" for s in range(4)]
    for seed in range(4):
        pair = (f"seed{seed}", f"seed{seed}_temperature0.02")  # the logged temperature is compared too
        _compare(tmp_path / "r4_d4", tmp_path / "r8_d1", pair, f"r4 seed{seed}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_pair(workdir, *flags):
    port = _free_port()
    env = {**os.environ, "MUJOCO_GL": "disable"}
    return [subprocess.Popen([sys.executable, RUN, CONFIG, f"--workdir={workdir}", "--progress=false",
                              "--config.num_seeds=4", f"--coordinator=localhost:{port}", "--num_processes=2",
                              f"--process_id={i}", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env) for i in range(2)]


def test_two_processes_train_resume_after_a_kill_and_match_one_process(tmp_path):
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, RUN, CONFIG, f"--workdir={single}", "--progress=false",
                           "--config.num_seeds=4"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = tmp_path / "multi"
    pair = _start_pair(multi)
    deadline = time.time() + 600
    while time.time() < deadline and all(p.poll() is None for p in pair):
        if os.path.exists(multi / "checkpoints" / "100" / "_CHECKPOINT_METADATA"):
            break
        time.sleep(0.1)
    for p in pair:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    assert os.path.exists(multi / "checkpoints" / "100"), "no checkpoint before the kill"
    pair = _start_pair(multi, "--resume")
    outputs = [p.communicate(timeout=600) for p in pair]
    for p, (_, err) in zip(pair, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert any("Resumed from" in out for out, _ in outputs)
    for seed in range(4):
        _compare(multi, single, f"seed{seed}", f"seed{seed}")
    summary = json.load(open(multi / "summary.json"))
    assert summary["runs"] == [f"seed{s}" for s in range(4)] and summary["step"] == 300
    proc = subprocess.run([sys.executable, RUN, CONFIG, f"--workdir={multi}", "--progress=false",
                           "--config.num_seeds=4", "--resume", "--config.total_steps=400"], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 2 and "written by 2 process(es)" in proc.stderr, proc.stderr[-2000:]
    assert "Compiling" not in proc.stdout  # refused before anything is compiled
