"""Checkpoints of a whole run with orbax: the device ``TrainState`` (params, optimiser states,
replay buffer, PRNG keys, counters; leading run axis R), one host record per run (the envs'
pickled state, the current observations, the pending transition, running sums) and JSON
metadata (step, wall time, ...).  State and records are sharded over the runs like the training
(``rfm_jax.infra.distributed``): with several processes each one writes and reads only its runs.

Each step's directory is written atomically by orbax, so a run killed while saving keeps its
previous checkpoint.  Each checkpoint's metadata also holds a SHA-256 digest of each process's
arrays, and
``restore_latest_good`` tries the checkpoints newest first, skipping (and naming) any that fails
to load or whose contents no longer match their digest: a truncated, half-deleted or overwritten
checkpoint falls back to the one before it instead of training on garbage.

A save that runs out of disk space raises ``DiskFullError`` (one line: the directory, the step,
the last good checkpoint, which is intact).  The partial directory of such a save, or of a
process killed while saving, is removed, and named, when the next ``Checkpointer`` opens the
directory.

``complete_steps(directory)`` and ``read_meta(directory, step)`` look at a run's checkpoints
without opening a ``Checkpointer`` (nothing is created, removed or restored but the metadata).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from rfm_jax.infra.distributed import Layout
from rfm_jax.infra.guards import is_disk_full

PARTIAL = ".orbax-checkpoint-tmp"  # orbax's suffix of a checkpoint directory still being written


class NoUsableCheckpoint(RuntimeError):
    """``restore_latest_good`` found no checkpoint that loads and matches its digest."""


class DiskFullError(OSError):
    """No space left on the device while saving a checkpoint; the previous one is intact."""


class ProcessCountMismatch(RuntimeError):
    """The checkpoint was written by another number of processes than this run has."""


class Checkpointer:
    """``save(step, state, records, meta)`` / ``restore(step, like_state) -> (state, records, meta)``.

    ``state`` holds arrays with the leading run axis R (global arrays, sharded over the runs by
    ``layout``); ``records`` is one ``bytes`` per run this process owns (its host side: envs,
    observations, running sums), stored as a [R, width] uint8 array sharded like the state, so
    that every process writes and reads only its own runs (orbax multi-process checkpointing).
    ``meta`` is JSON written once.  Each process's SHA-256 digest of its part is saved and checked.
    """

    def __init__(self, directory: str, layout: Layout | None = None, max_to_keep: int = 2, log=print):
        self.directory, self.layout = directory, layout
        if jax.process_index() == 0:
            remove_partial(directory, log)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def _layout(self, like_state) -> Layout:
        if self.layout is None:  # e.g. load_policy: every run on the first local device
            self.layout = Layout.make(jax.tree.leaves(like_state)[0].shape[0], jax.local_devices()[:1])
        return self.layout

    def save(self, step: int, state, records: list[bytes], meta: dict) -> None:
        """Blocks until written (the caller donates ``state`` to the next step)."""
        layout = self._layout(state)
        lengths = np.asarray([len(r) for r in records], np.int32)
        width = int(layout.gather(lengths.max(keepdims=True)).max())
        rows = np.zeros((len(records), width), np.uint8)
        for i, record in enumerate(records):
            rows[i, :len(record)] = np.frombuffer(record, np.uint8)
        host = {"records": rows, "lengths": lengths}
        local = digest(layout.to_local(state), host)
        digests = layout.gather(np.frombuffer(bytes.fromhex(local), np.uint8)[None])
        meta = {**meta, "record_width": width, "num_processes": jax.process_count(),
                "digests": [bytes(d).hex() for d in np.asarray(digests, np.uint8)]}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  host=ocp.args.StandardSave(layout.to_global(host)), meta=ocp.args.JsonSave(meta))
        try:
            with _quiet_orbax(settle=1.0):
                self.manager.save(step, args=args, force=True)
                self.manager.wait_until_finished()
        except Exception as error:
            if not is_disk_full(error):
                raise
            self.manager.reload()
            last = self.manager.latest_step()
            kept = f"the last good checkpoint, step {last}, is intact" if last is not None else "no earlier checkpoint"
            raise DiskFullError(errno.ENOSPC, f"no space left on the device while saving checkpoint {step} to "
                                f"{self.directory} ({kept}); free some space, then --resume") from None

    def restore(self, step: int, like_state):
        """Restore into the structure, shapes, dtypes and shardings of ``like_state`` (e.g. a fresh
        init); returns (state, this process's records, meta)."""
        layout = self._layout(like_state)
        meta = dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        if meta.get("num_processes", 1) != jax.process_count():
            raise ProcessCountMismatch(f"checkpoint {self.directory}/{step} was written by {meta['num_processes']} "
                                       f"process(es); this run has {jax.process_count()}: resume with "
                                       f"--num_processes={meta['num_processes']}")
        num_runs, width = layout.num_runs, int(meta["record_width"])
        host_like = {"records": jax.ShapeDtypeStruct((num_runs, width), np.uint8, sharding=layout.sharding),
                     "lengths": jax.ShapeDtypeStruct((num_runs,), np.int32, sharding=layout.sharding)}
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)),
            host=ocp.args.StandardRestore(host_like)))
        host = {k: np.asarray(v) for k, v in layout.to_local(out["host"]).items()}
        if meta["digests"][jax.process_index()] != digest(layout.to_local(out["state"]), host):
            raise ValueError("its arrays do not match the digest saved with them (corrupted on disk)")
        records = [host["records"][i, :n].tobytes() for i, n in enumerate(host["lengths"])]
        return out["state"], records, meta

    def restore_latest_good(self, like_state, log=print):
        """(step, state, records, meta) of the newest checkpoint that loads and matches its digest;
        each one skipped is reported through ``log`` with its path and reason.  Raises
        NoUsableCheckpoint naming every failure when none is usable."""
        layout = self._layout(like_state)
        failures, bad_steps = [], []
        for step in sorted(self.manager.all_steps(), reverse=True):
            restored, reason = None, None
            try:
                with _quiet_orbax(settle=1.0):  # the one-line reason below says what failed (tensorstore
                    # may print its asyncio traceback just after the error: wait for it, on failure only)
                    restored = self.restore(step, like_state)
            except ProcessCountMismatch:
                raise
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint: try the one before
                reason = _reason(error)
            if layout.any_of([restored is None])[0]:  # every process resumes from the same step
                reason = reason or "unusable in another process"
                failures.append(f"{self.directory}/{step}: {reason}")
                bad_steps.append(step)
                log(f"Checkpoint {self.directory}/{step} is unusable ({reason}); trying an older one.")
                continue
            if jax.process_index() == 0:
                self._set_aside(bad_steps, log)
            return (step, *restored)
        raise NoUsableCheckpoint("no usable checkpoint: " + ("; ".join(failures) or f"none in {self.directory}")
                                 + "; start afresh in another --workdir")

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


def complete_steps(directory: str) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, oldest first ([] when there is none or
    no directory): the step directories orbax has finalised, by its public step-path API (a save
    still being written, or cut short, is not one)."""
    if not os.path.isdir(directory):
        return []
    return sorted(m.step for m in ocp.path.step.standard_name_format().find_all(os.path.abspath(directory)))


def read_meta(directory: str, step: int) -> dict:
    """The JSON metadata of checkpoint ``step`` in ``directory`` (step, wall time, process count,
    digests, ...), restored through orbax without the arrays or the host records."""
    path = os.path.join(os.path.abspath(directory), str(step))
    with _quiet_orbax(), ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        return dict(checkpointer.restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def read_state(directory: str, step: int, like_state):
    """The train state of checkpoint ``step`` in ``directory`` alone, read-only: nothing in the
    directory is created or removed (a run may be writing to it) and the host records, which are
    pickles, are not read.  Not checked against the digests, which cover each part with its
    records."""
    path = os.path.join(os.path.abspath(directory), str(step))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    with _quiet_orbax(), ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        return checkpointer.restore(path, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]


def _reason(error: BaseException) -> str:
    """The first line of ``error``'s message, without TensorStore's appended spec dump."""
    text = str(error).split(" See full TensorStore details")[0].splitlines()
    return text[0][:300] if text and text[0] else type(error).__name__


def remove_partial(directory: str, log=print) -> None:
    """Delete the partial checkpoint directories (``<step>.orbax-checkpoint-tmp...``) in ``directory``."""
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        if PARTIAL in name:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            log(f"Removed the partial checkpoint {os.path.join(directory, name)} left by an interrupted save.")


@contextlib.contextmanager
def _quiet_orbax(settle: float = 0.0):
    """Orbax logs a failed background write with tracebacks (and tensorstore prints asyncio
    tracebacks straight to file descriptor 2) before re-raising it; the caller reports it in one
    line instead.  What a successful save writes to stderr is passed on."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(settle)  # orbax's and tensorstore's threads may report a failed save once more
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            logger.setLevel(level)
            if not failed:
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))


def digest(state, host: dict) -> str:
    """SHA-256 over every array of ``state`` (this process's rows, on the host) and ``host``, in a fixed order."""
    sha = hashlib.sha256()
    for leaf in jax.tree.leaves((jax.device_get(state), {k: host[k] for k in sorted(host)})):
        array = np.ascontiguousarray(np.asarray(leaf))
        sha.update(f"{array.dtype}{array.shape}".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()
