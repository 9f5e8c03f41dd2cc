"""Test-wide settings: no display on CI machines, so MuJoCo loads without a GL backend; the same
XLA CPU flags as experiments/run.py, so tests compile what the runs compile; a persistent XLA
compilation cache per test worker (fresh each session), so that the many smoke runs of
experiments/run.py in subprocesses compile the same programs once."""

import atexit
import os
import shutil
import tempfile

import pytest

from rfm_jax.infra.runtime import configure_xla_cpu

os.environ.setdefault("MUJOCO_GL", "disable")
# One cache per process (xdist's workers inherit the controller's environment, and two workers
# must not write one cache at once); a cache the user set is kept as given.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ or os.environ.get("RFM_JAX_TESTS_OWN_CACHE"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rfm_jax_tests_xla_")
    os.environ["RFM_JAX_TESTS_OWN_CACHE"] = "1"
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
configure_xla_cpu()


@pytest.fixture(scope="session")
def run_script():
    """experiments/run.py imported once per session (it defines absl flags, which a second import
    under another module name would define twice), with experiments/ on sys.path for ``configs``."""
    import importlib
    import sys

    experiments = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
    if experiments not in sys.path:
        sys.path.insert(0, experiments)
    return importlib.import_module("run")


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """The smoke preset (2 seeds, 300 steps) run to the end by experiments/run.py, started with
    --resume on the leftovers of an attempt killed before its first checkpoint: it must start
    afresh, say so, and drop those rows (a duplicate step-0 evaluation, a step-999 row)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    workdir = tmp_path_factory.mktemp("full")
    (workdir / "checkpoints").mkdir()
    (workdir / "metrics").mkdir()
    (workdir / "metrics" / "train_seed0.jsonl").write_text('{"step": 999, "wall_time": 1.0}\n')
    (workdir / "metrics" / "eval_seed0.jsonl").write_text('{"step": 0, "wall_time": 1.0, "eval_return_mean": 1.0}\n')
    cmd = [sys.executable, os.path.join(root, "experiments", "run.py"),
           "--config=" + os.path.join(root, "experiments", "configs", "rfm.py") + ":smoke",
           f"--workdir={workdir}", "--progress=false", "--resume"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no complete checkpoint" in proc.stdout and "starting from step 0" in proc.stdout
    return str(workdir)
