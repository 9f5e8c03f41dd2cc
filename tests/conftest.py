"""Test-wide settings: no display on CI machines, so MuJoCo loads without a GL backend."""

import os

os.environ.setdefault("MUJOCO_GL", "disable")
