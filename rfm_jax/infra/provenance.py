"""``<workdir>/provenance.json``: what produced a run, one entry per session (the first run and
each resume), each ``provenance()`` (versions, devices, git commit, command) with its start time and
whether it resumed.  The version of rfm_jax is read from the installed package's metadata
(``importlib.metadata``), so this module imports nothing above the infra layer.

    record_session("runs/demo", resume=False)
    [s["git_commit"] for s in read_sessions("runs/demo")]
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import time

PROVENANCE = "provenance.json"  # in the workdir


def version() -> str:
    """The installed rfm_jax's version ("unknown" where it is not installed, e.g. on PYTHONPATH only)."""
    try:
        return importlib.metadata.version("rfm_jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def provenance(argv: list[str] | None = None) -> dict:
    """What produced a run: rfm_jax, JAX and jaxlib versions, Python, the platform, JAX's devices,
    the git commit of the source tree (and whether it had uncommitted changes) when there is one,
    and the command line ``argv`` (default ``sys.argv``)."""
    import platform
    import subprocess
    import sys

    import jax
    import jaxlib

    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above rfm_jax/

    def git(*args):
        try:
            out = subprocess.run(["git", "-C", source, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {
        "rfm_jax": version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend(),
        "git_commit": commit, "git_dirty": None if commit is None else bool(git("status", "--porcelain", "-uno")),
        "command": [sys.executable, *(sys.argv if argv is None else argv)],
    }



def read_sessions(workdir: str) -> list[dict]:
    """The sessions recorded in ``workdir`` so far, oldest first ([] before the first)."""
    path = os.path.join(workdir, PROVENANCE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def record_session(workdir: str, resume: bool, argv: list[str] | None = None, log=print) -> dict:
    """Append this session (``provenance(argv)``, default command ``sys.argv``) with its start
    time to ``<workdir>/provenance.json``; returns the entry.  A damaged file (not a JSON list) is
    kept beside it as ``provenance.json.damaged`` and a new one started, saying so in one line."""
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume": resume, **provenance(argv)}
    path = os.path.join(workdir, PROVENANCE)
    try:
        earlier = read_sessions(workdir)
        if not isinstance(earlier, list):
            raise ValueError("not a list")
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        os.replace(path, path + ".damaged")
        log(f"{path} was damaged ({str(error).splitlines()[0][:80]}); kept as {PROVENANCE}.damaged, a new one started.")
        earlier = []
    sessions = [*earlier, entry]
    with open(os.path.join(workdir, PROVENANCE), "w") as f:
        json.dump(sessions, f, indent=2)
    return entry
