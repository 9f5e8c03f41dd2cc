"""``<workdir>/provenance.json``: what produced a run, one entry per session (the first run and
each resume), each ``rfm_jax.infra.runtime.provenance()`` (versions, devices, git commit, command)
with its start time and whether it resumed.

    record_session("runs/demo", resume=False)
    [s["git_commit"] for s in read_sessions("runs/demo")]
"""

from __future__ import annotations

import json
import os
import time

PROVENANCE = "provenance.json"  # in the workdir


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
    from rfm_jax.infra.runtime import provenance

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
