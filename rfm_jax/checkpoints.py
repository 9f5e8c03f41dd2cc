"""Checkpoints of a whole run with orbax: the device ``TrainState`` (params, optimiser states,
replay buffer, PRNG keys, counters; leading seed axis), host arrays (the envs' pickled state, the
current observations, the pending transition) and JSON metadata (step, wall time, ...).

Each step's directory is written atomically by orbax, so a run killed while saving keeps its
previous checkpoint.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """``save(step, state, host, meta)`` / ``restore(step, like_state) -> (state, host, meta)``."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, host: dict[str, np.ndarray], meta: dict) -> None:
        """Blocks until written (the caller donates ``state`` to the next step)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            host=ocp.args.StandardSave({k: np.asarray(v) for k, v in host.items()}),
            meta=ocp.args.JsonSave(meta),
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
        return out["state"], host, dict(out["meta"])

    def close(self) -> None:
        self.manager.close()
