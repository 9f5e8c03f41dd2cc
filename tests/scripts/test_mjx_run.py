"""experiments/run.py on an mjx: task: a smoke run of mjx:cartpole-swingup on the host loop killed with
SIGKILL after its step-200 checkpoint and resumed, and on the on-device loop stopped by SIGTERM,
resumed, killed with SIGKILL and resumed, writes the uninterrupted run's rows exactly; an
unsupported task, loop=device on a host task and more envs than the buffer holds are refused in
one line before compiling."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rfm_jax.infra.metrics import read_workdir

pytest.importorskip("mujoco.mjx")
pytestmark = pytest.mark.slow  # subprocesses: not in the fast lane (docs/guide.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "experiments", "run.py")
CONFIG = "--config=" + os.path.join(ROOT, "experiments", "configs", "rfm.py") + ":smoke"
TASK = "--config.task=mjx:cartpole-swingup"
ENV = {**os.environ, "MUJOCO_GL": "disable"}


def _cmd(workdir, *flags):
    return [sys.executable, RUN, CONFIG, TASK, f"--workdir={workdir}", "--progress=false", *flags]


def _metrics(workdir):
    return read_workdir(str(workdir))


def _wait_for(path, proc, text=None, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and (text is None or text in path.read_text()):
            return
        time.sleep(0.02)


def test_an_mjx_run_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    proc = subprocess.run(_cmd(whole), capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(whole / "summary.json"))
    assert summary["step"] == 300 and all(e is not None for e in summary["last_eval"])
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(killed), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for(killed / "checkpoints" / "200" / "commit_success.txt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = subprocess.run(_cmd(killed, "--resume"), capture_output=True, text=True, timeout=900, env=ENV)
    assert resumed.returncode == 0 and "at env step 200" in resumed.stdout, resumed.stderr[-3000:]
    assert _metrics(str(killed)) == _metrics(str(whole))


def test_an_on_device_run_stopped_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    """The on-device loop (chunks of 50 env steps, 4 envs per run): SIGTERM once the row of step
    100 is written saves at the next chunk boundary; --resume, SIGKILL after the step-200
    checkpoint; --resume again: the rows equal the uninterrupted run's exactly.  The processes share
    a JAX compilation cache, so only the first compiles in full."""
    env = {**ENV, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    flags = ("--config.loop=device", "--config.num_envs=4")
    whole = tmp_path / "whole"
    proc = subprocess.run(_cmd(whole, *flags), capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chunks of 50 env steps" in proc.stdout
    summary = json.load(open(whole / "summary.json"))
    assert summary["step"] == 300 and all(e is not None for e in summary["last_eval"])
    chain = tmp_path / "chain"
    proc = subprocess.Popen(_cmd(chain, *flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for(chain / "metrics" / "train_seed0.jsonl", proc, '"step": 100,')
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    steps = sorted(int(d) for d in os.listdir(chain / "checkpoints") if d.isdigit())
    assert steps[-1] in (150, 250), steps  # saved at the boundary after the signal, not a checkpoint step
    proc = subprocess.Popen(_cmd(chain, "--resume", *flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    _wait_for(chain / "checkpoints" / "200" / "commit_success.txt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = subprocess.run(_cmd(chain, "--resume", *flags), capture_output=True, text=True, timeout=900, env=env)
    assert resumed.returncode == 0 and "Resumed from" in resumed.stdout, resumed.stderr[-3000:]
    assert _metrics(str(chain)) == _metrics(str(whole))
    other = subprocess.run(_cmd(chain, "--resume", "--config.num_envs=4"), capture_output=True, text=True,
                           timeout=300, env=env)  # the host loop cannot continue a device loop's run
    assert other.returncode == 2 and "loop ('device' -> 'host')" in other.stderr, other.stderr[-2000:]


@pytest.mark.parametrize("flags, words", [
    (["--config.task=mjx:finger-spin"], "mjx:finger-spin is not supported"),
    (["--config.loop=device", "--config.task=gym:Hopper-v5"], "config.loop='device' steps mjx: tasks only"),
    (["--config.loop=device", "--config.task=cartpole-swingup"], "config.loop='device' steps mjx: tasks only"),
    (["--config.loop=device", "--config.num_envs=2000"], "config.num_envs (2000) exceeds config.replay_capacity"),
    (["--config.loop=device", "--config.task=mjx:cartpol-swingup"], "Unknown mjx: task 'cartpol-swingup'"),
])
def test_bad_input_is_refused_in_one_line_before_compiling(flags, words, tmp_path):
    proc = subprocess.run(_cmd(tmp_path / "w", *flags), capture_output=True, text=True, timeout=300, env=ENV)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr[-2000:]
    assert "Compiling" not in proc.stdout and not (tmp_path / "w").exists()
