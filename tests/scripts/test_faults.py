"""The fast cases of experiments/faults.py (every bad input refused in one line), a signal during
compilation, and a checkpoint save that runs out of disk space.  The slow cases (20 kills, every
corruption, NaN, a real full disk on tmpfs) are in faults.py's committed results (docs/results.md)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from rfm_jax.infra.checkpoints import PARTIAL, Checkpointer, DiskFullError

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "experiments", "run.py")
CONFIG = "--config=" + os.path.join(ROOT, "experiments", "configs", "rfm.py") + ":smoke"


def test_faults_config_case_refuses_every_bad_input_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "faults.py"), "--cases=config",
                           f"--out={tmp_path}"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = json.load(open(tmp_path / "faults.json"))["rows"]
    assert row["injected"] >= 15 and row["wrong_exits"] == 0, row


def test_a_signal_during_compilation_stops_the_run_within_seconds(tmp_path):
    """Compiling the smoke preset takes about 15 s here; SIGTERM right after it starts ends the run
    in under 5 s with one line, exit 0, and no checkpoint (nothing was trained)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    proc = subprocess.Popen([sys.executable, RUN, CONFIG, f"--workdir={tmp_path / 'w'}", "--progress=false"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "MUJOCO_GL": "disable"})
    deadline = time.time() + 300
    while time.time() < deadline and not proc.stdout.readline().startswith("Compiling"):
        pass
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    elapsed = time.time() - sent
    assert proc.returncode == 0 and elapsed < 5.0, (proc.returncode, elapsed, err[-2000:])
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "while compiling" in lines[0] and "--resume starts from step 0" in lines[0], lines
    assert not [d for d in os.listdir(tmp_path / "w" / "checkpoints") if d.isdigit()]


class _FullDisk:
    """Stands in for orbax's manager: saves fail with ENOSPC after leaving a partial directory."""

    def __init__(self, manager, directory):
        self.manager, self.directory = manager, directory

    def save(self, step, args, force):
        os.makedirs(os.path.join(self.directory, f"{step}{PARTIAL}"))
        raise ValueError("RESOURCE_EXHAUSTED: Failed to write 1024 bytes: No space left on device "
                         f"[os_error_code='{errno.ENOSPC}']")

    def __getattr__(self, name):
        return getattr(self.manager, name)


def test_a_full_disk_names_the_intact_checkpoint_and_the_partial_one_goes_at_the_next_start(tmp_path):
    directory = str(tmp_path / "checkpoints")
    state = {"w": jnp.arange(6.0).reshape(2, 3)}
    ckpt = Checkpointer(directory)
    ckpt.save(100, state, [b"run0", b"run1"], {"step": 100})
    real = ckpt.manager
    ckpt.manager = _FullDisk(real, directory)
    with pytest.raises(DiskFullError) as error:
        ckpt.save(200, state, [b"run0", b"run1"], {"step": 200})
    message = error.value.strerror
    assert "no space left on the device while saving checkpoint 200" in message
    assert "the last good checkpoint, step 100, is intact" in message and "\n" not in message
    ckpt.manager = real
    ckpt.close()
    logged = []
    ckpt = Checkpointer(directory, log=logged.append)
    assert len(logged) == 1 and "Removed the partial checkpoint" in logged[0] and PARTIAL in logged[0]
    assert not [d for d in os.listdir(directory) if PARTIAL in d]
    step, restored, records, meta = ckpt.restore_latest_good(state)
    assert step == 100 and records == [b"run0", b"run1"] and meta["step"] == 100
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(state["w"]))
    ckpt.close()


def test_the_non_finite_guard_names_the_first_bad_run_and_metric_among_many():
    """With 6 vmapped runs and one bad entry, the guard names that run and metric (the loop then
    stops every run: docs/guide.md, Non-finite guard); the state check flags only the run that holds it."""
    from rfm_jax.infra.guards import first_non_finite, runs_finite

    metrics = {"critic_loss": np.ones(6), "q_mean": np.array([0.0, 1.0, 2.0, np.inf, 4.0, 5.0])}
    assert first_non_finite(metrics) == ("q_mean", 3, float("inf"))
    assert first_non_finite({"critic_loss": np.ones(6)}) is None
    state = {"params": jnp.ones((6, 4, 3)), "step": jnp.zeros((6,), jnp.int32)}
    state["params"] = state["params"].at[4, 2, 1].set(jnp.nan)
    np.testing.assert_array_equal(np.asarray(runs_finite(state)), [True, True, True, True, False, True])
