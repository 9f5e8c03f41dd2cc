"""Checkpoints of a whole run with orbax: the device ``TrainState`` (params, optimiser states,
replay buffer, PRNG keys, counters; leading seed axis), host arrays (the envs' pickled state, the
current observations, the pending transition) and JSON metadata (step, wall time, ...).

Each step's directory is written atomically by orbax, so a run killed while saving keeps its
previous checkpoint.  Each checkpoint's metadata also holds a SHA-256 digest of its arrays, and
``restore_latest_good`` tries the checkpoints newest first, skipping (and naming) any that fails
to load or whose contents no longer match their digest: a truncated, half-deleted or overwritten
checkpoint falls back to the one before it instead of training on garbage.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """``save(step, state, host, meta)`` / ``restore(step, like_state) -> (state, host, meta)``."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.directory = directory
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, host: dict[str, np.ndarray], meta: dict) -> None:
        """Blocks until written (the caller donates ``state`` to the next step)."""
        host = {k: np.asarray(v) for k, v in host.items()}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            host=ocp.args.StandardSave(host),
            meta=ocp.args.JsonSave({**meta, "digest": digest(state, host)}),
        )
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, like_state):
        """Restore into the structure, shapes and dtypes of ``like_state`` (e.g. a fresh init)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                host=ocp.args.StandardRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        host = {k: np.asarray(v) for k, v in out["host"].items()}
        meta = dict(out["meta"])
        saved = meta.pop("digest", None)
        if saved is not None and saved != digest(out["state"], host):
            raise ValueError("its arrays do not match the digest saved with them (corrupted on disk)")
        return out["state"], host, meta

    def restore_latest_good(self, like_state, log=print):
        """(step, state, host, meta) of the newest checkpoint that loads and matches its digest;
        each one skipped is reported through ``log`` with its path and reason.  Raises
        FileNotFoundError naming every failure when none is usable."""
        failures, bad_steps = [], []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.restore(step, like_state)
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint: try the one before
                reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
                failures.append(f"{self.directory}/{step}: {reason}")
                bad_steps.append(step)
                log(f"Checkpoint {self.directory}/{step} is unusable ({reason}); trying an older one.")
                continue
            self._set_aside(bad_steps, log)
            return (step, *restored)
        raise FileNotFoundError("no usable checkpoint: " + ("; ".join(failures) or f"none in {self.directory}"))

    def _set_aside(self, steps, log) -> None:
        """Move unusable newer checkpoints to ``<directory>_unusable/`` (kept for inspection, out of
        the way of the steps the resumed run will save)."""
        if not steps:
            return
        aside = f"{os.path.abspath(self.directory)}_unusable"
        os.makedirs(aside, exist_ok=True)
        for step in steps:
            target = os.path.join(aside, f"{step}_{int(time.time())}")
            shutil.move(os.path.join(os.path.abspath(self.directory), str(step)), target)
            log(f"Moved the unusable checkpoint {step} to {target}.")
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()


def digest(state, host: dict) -> str:
    """SHA-256 over every array of ``state`` (a pytree, fetched to the host) and ``host``, in a fixed order."""
    sha = hashlib.sha256()
    for leaf in jax.tree.leaves((jax.device_get(state), {k: host[k] for k in sorted(host)})):
        array = np.ascontiguousarray(np.asarray(leaf))
        sha.update(f"{array.dtype}{array.shape}".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()
