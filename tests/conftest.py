"""Test-wide settings: no display on CI machines, so MuJoCo loads without a GL backend; the same
XLA CPU flags as experiments/run.py, so tests compile what the runs compile."""

import os

import pytest

from rfm_jax.runtime import configure_xla_cpu

os.environ.setdefault("MUJOCO_GL", "disable")
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
