"""Test-wide settings: no display on CI machines, so MuJoCo loads without a GL backend; the same
XLA CPU flags as experiments/run.py, so tests compile what the runs compile."""

import os

from rfm_jax.runtime import configure_xla_cpu

os.environ.setdefault("MUJOCO_GL", "disable")
configure_xla_cpu()
