"""Headless rendering of dm_control envs to MP4, and the choice of MuJoCo's OpenGL backend.

dm_control fixes its rendering backend when it is first imported, from ``MUJOCO_GL``.
``select_gl_backend`` runs before that import (``rfm_jax.envs`` calls it): a ``MUJOCO_GL`` the user
set is kept as it is; otherwise EGL is tried, then OSMesa, and ``disable`` is the last resort, so
that stepping envs always works and rendering works wherever a backend does.  A backend that fails
to load leaves no trace behind (its half-imported modules and its ``PYOPENGL_PLATFORM`` are undone).

``Recorder`` collects frames of one env (every ``frame_every`` steps) and writes them with
imageio's ffmpeg plugin (``pip install "rfm_jax[video]"``; on Linux EGL needs libegl1, OSMesa
libosmesa6).  When a frame cannot be rendered or written, ``Recorder`` logs one warning and
records nothing more: training goes on.
"""

from __future__ import annotations

import ctypes.util
import importlib
import logging
import os
import sys
import warnings

import numpy as np

logger = logging.getLogger("rfm_jax")
CANDIDATES = (("egl", "EGL"), ("osmesa", "OSMesa"))  # (MUJOCO_GL value, shared library) in order
GL_BACKEND = {"value": None, "chosen_by": None, "failures": []}  # what select_gl_backend decided


def _forget(prefixes: tuple[str, ...]) -> None:
    for name in [m for m in sys.modules if m.startswith(prefixes)]:
        del sys.modules[name]


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` before dm_control is imported (module docstring); returns its value."""
    if GL_BACKEND["value"] is not None:
        return GL_BACKEND["value"]
    if "MUJOCO_GL" in os.environ:
        GL_BACKEND.update(value=os.environ["MUJOCO_GL"], chosen_by="user")
        return GL_BACKEND["value"]
    if "dm_control._render" in sys.modules:  # imported before us: its choice stands
        GL_BACKEND.update(value=sys.modules["dm_control._render"].BACKEND or "auto", chosen_by="dm_control")
        return GL_BACKEND["value"]
    platform = os.environ.get("PYOPENGL_PLATFORM")
    for value, library in CANDIDATES:
        if ctypes.util.find_library(library) is None:
            GL_BACKEND["failures"].append(f"{value}: lib{library} not found")
            continue
        os.environ["MUJOCO_GL"] = value
        try:
            importlib.import_module("dm_control._render")
        except Exception as error:  # noqa: BLE001 - any failure to load a backend means: try the next one
            GL_BACKEND["failures"].append(f"{value}: {error}")
            _forget(("dm_control", "OpenGL"))
            if platform is None:
                os.environ.pop("PYOPENGL_PLATFORM", None)
            continue
        GL_BACKEND.update(value=value, chosen_by="rfm_jax")
        return value
    os.environ["MUJOCO_GL"] = "disable"
    GL_BACKEND.update(value="disable", chosen_by="rfm_jax")
    return "disable"


class Recorder:
    """Frames of one env to ``path`` (MP4).  ``add(env)`` renders a frame every ``frame_every``
    calls; ``close()`` writes the file and returns its path, or None when nothing was recorded.
    ``switch`` ({"on": bool}) is shared by every recorder of a run: the first failure logs one
    warning (with ``select_gl_backend``'s findings) and turns them all off."""

    def __init__(self, path: str, switch: dict, *, height: int = 120, width: int = 160, frame_every: int = 2,
                 fps: int = 50):
        self.path, self.height, self.width, self.frame_every, self.fps = path, height, width, frame_every, fps
        self.switch = switch
        self.frames: list[np.ndarray] = []
        self.calls = 0

    @property
    def failed(self) -> bool:
        return not self.switch["on"]

    def _fail(self, what: str, error: Exception) -> None:
        self.switch["on"], self.frames = False, []
        tried = "; ".join(GL_BACKEND["failures"]) or "none failed"
        logger.warning("video off: %s failed (%s: %s); MUJOCO_GL=%s (backends tried: %s). Training goes on.",
                       what, type(error).__name__, error, os.environ.get("MUJOCO_GL"), tried)

    def add(self, env) -> None:
        """Render ``env`` (a dm_control env, or a Gymnasium env made with render_mode rgb_array) if
        this call is due."""
        self.calls += 1
        if self.failed or (self.calls - 1) % self.frame_every:
            return
        try:
            if hasattr(env, "physics"):
                camera = 0 if env.physics.model.ncam > 0 else -1
                self.frames.append(env.physics.render(self.height, self.width, camera_id=camera))
            else:
                self.frames.append(np.asarray(env.render(), np.uint8))
        except Exception as error:  # noqa: BLE001 - no renderer, no context, ...: warn once and go on
            self._fail("rendering", error)

    def close(self) -> str | None:
        if self.failed or not self.frames:
            return None
        try:
            import imageio.v2 as imageio

            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with warnings.catch_warnings():  # imageio starts ffmpeg by fork + exec, which JAX warns about
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                imageio.mimwrite(self.path, np.stack(self.frames), fps=self.fps, macro_block_size=8)
        except Exception as error:  # noqa: BLE001 - imageio or ffmpeg missing, disk full, ...
            self._fail(f"writing {self.path} (pip install 'rfm_jax[video]')", error)
            return None
        self.frames = []
        return self.path
