"""experiments/run.py on an mjx: task: a smoke run of mjx:cartpole-swingup on the host loop, killed with
SIGKILL after its step-200 checkpoint and resumed, writes the uninterrupted run's rows exactly; an
unknown mjx: task and loop=device are refused in one line before compiling."""

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


def test_an_mjx_run_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    proc = subprocess.run(_cmd(whole), capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(whole / "summary.json"))
    assert summary["step"] == 300 and all(e is not None for e in summary["last_eval"])
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(killed), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    done, deadline = killed / "checkpoints" / "200" / "commit_success.txt", time.time() + 600
    while time.time() < deadline and proc.poll() is None and not done.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = subprocess.run(_cmd(killed, "--resume"), capture_output=True, text=True, timeout=900, env=ENV)
    assert resumed.returncode == 0 and "at env step 200" in resumed.stdout, resumed.stderr[-3000:]
    assert _metrics(str(killed)) == _metrics(str(whole))


@pytest.mark.parametrize("flags, words", [
    (["--config.task=mjx:finger-spin"], "mjx:finger-spin is not supported"),
    (["--config.loop=device"], "config.loop='device': the on-device loop is not in this release"),
])
def test_bad_input_is_refused_in_one_line_before_compiling(flags, words, tmp_path):
    proc = subprocess.run(_cmd(tmp_path / "w", *flags), capture_output=True, text=True, timeout=300, env=ENV)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr[-2000:]
    assert "Compiling" not in proc.stdout and not (tmp_path / "w").exists()
