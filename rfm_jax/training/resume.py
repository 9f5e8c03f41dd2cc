"""Resuming a run directory: whether a session continues the run in its workdir, and the checks
that refuse, in one line (``UserError``) and before anything is compiled, a resume that could not
continue it: another config (but for ``RESUMABLE_CHANGES``), a ``total_steps`` before the newest
checkpoint, a missing or garbled ``config.json`` / ``setup.json``, another process count.

    start = resume_step("runs/demo", config, resume=True)   # None: start afresh at step 0

A resume trusts its workdir: the checkpoints' host records (env states) are pickles, which the
resumed run unpickles.  ``rfm_jax.training.policy.load_policy`` restores only the arrays.
"""

from __future__ import annotations

import json
import os

from rfm_jax.infra.checkpoints import complete_steps, read_meta
from rfm_jax.infra.guards import UserError
from rfm_jax.training.run_config import ADDED

CONFIG_FILE = "config.json"  # in the workdir: the run's config, written before training
# Fields that may differ between a run and its resume (they change no array's shape): e.g. lower
# learning rates to continue from the last good checkpoint of a run that diverged.
RESUMABLE_CHANGES = ("total_steps", "video", "agent.actor_lr", "agent.critic_lr", "agent.alpha_lr",
                     "agent.grad_clip", "hyper.clip", "wandb", "wandb_project", "wandb_entity", "wandb_group")


def _say(message: str) -> None:
    print(message, flush=True)


def latest_checkpoint(workdir: str) -> int | None:
    """Step of the newest complete checkpoint in ``<workdir>/checkpoints`` (None: none yet)."""
    steps = complete_steps(os.path.join(workdir, "checkpoints"))
    return steps[-1] if steps else None


def resume_step(workdir: str, config, resume: bool, log=_say) -> int | None:
    """The checkpoint step this session continues from, or None to start at step 0.  A workdir
    holding a run needs ``resume``; with ``resume`` and no complete checkpoint (e.g. killed before
    its first) the run starts afresh, saying so through ``log``.  A resume is checked first."""
    latest = latest_checkpoint(workdir)
    if latest is None:
        if resume:
            log(f"--resume: no complete checkpoint in {workdir}; starting from step 0.")
        return None
    if not resume:
        raise UserError(f"{workdir} already holds a run: pass --resume to continue it, or another --workdir")
    check_resume(workdir, config, latest, log)
    return latest


def read_run_file(workdir: str, name: str) -> dict:
    """The JSON object in ``<workdir>/<name>``; a file missing, unreadable or garbled is refused
    in one line naming it."""
    path = os.path.join(workdir, name)
    damaged = "; restore it, or start afresh in another --workdir"
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        raise UserError(f"--resume: {path} is missing{damaged}") from None
    except json.JSONDecodeError as error:
        raise UserError(f"--resume: {path} is not valid JSON ({error.msg}: line {error.lineno} column "
                        f"{error.colno}){damaged}") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UserError(f"--resume: cannot read {path} ({reason}){damaged}") from None
    if not isinstance(value, dict):
        raise UserError(f"--resume: {path} does not hold a JSON object{damaged}")
    return value


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resume(workdir: str, config, latest: int | None, log=_say) -> None:
    """Refuse a resume whose run files are missing or garbled, whose config differs from the run's
    (naming every differing field, nested ones as agent.actor_lr), whose total_steps lies before
    the newest checkpoint ``latest`` or whose process count differs from the checkpoint's."""
    from rfm_jax.training.loop import SETUP_FILE  # what load_policy rebuilds the agent from

    saved = {**ADDED, **_renamed(_flat(read_run_file(workdir, CONFIG_FILE)))}  # runs from before a field
    read_run_file(workdir, SETUP_FILE)
    current = {**ADDED, **_renamed(_flat(json.loads(config.to_json())))}
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)
               and k not in RESUMABLE_CHANGES]
    if changed:
        raise UserError(f"--resume: config fields differ from {workdir}/{CONFIG_FILE}: "
                        + ", ".join(f"{k} ({saved.get(k)!r} -> {current.get(k)!r})" for k in changed)
                        + f"; only these may change on resume: {', '.join(RESUMABLE_CHANGES)}")
    for k in RESUMABLE_CHANGES:
        if k in saved and saved.get(k) != current.get(k):
            log(f"--resume: {k} changes from {saved[k]!r} to {current[k]!r} (allowed on resume).")
    if latest is not None and config.total_steps < latest:
        raise UserError(f"--resume: config.total_steps ({config.total_steps}) is below the newest "
                        f"checkpoint's step ({latest}) in {workdir}")
    check_process_count(workdir, latest)


def _renamed(flat: dict) -> dict:
    """Flat config fields with a renamed agent field (``agents.base.RENAMED``) under its new name,
    so that a run written before the rename resumes."""
    from rfm_jax.agents.base import RENAMED

    flat = dict(flat)
    for old, new in RENAMED.items():
        value = flat.pop(f"agent.{old}", None)
        if value is not None:
            flat[f"agent.{new}"] = value
        flat.pop(f"sweep.{old}", None)
    return flat


def check_process_count(workdir: str, step: int | None, process_count: int | None = None) -> None:
    """Refuse, before compiling, to resume a checkpoint written by another number of processes
    than ``process_count`` (default: this run's); an unreadable metadata file is left to
    ``Checkpointer.restore``, which checks it again."""
    if step is None:
        return
    if process_count is None:
        import jax

        process_count = jax.process_count()
    try:
        saved = int(read_meta(os.path.join(workdir, "checkpoints"), step).get("num_processes", 1))
    except Exception:  # noqa: BLE001 - any unreadable metadata: Checkpointer.restore names it
        return
    if saved != process_count:
        raise UserError(f"--resume: checkpoint {workdir}/checkpoints/{step} was written by {saved} process(es); "
                        f"this run has {process_count}: resume with --num_processes={saved}")
