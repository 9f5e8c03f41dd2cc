"""What keeps a run from training on garbage or hanging on a signal: the non-finite guard, the
signal flag, interruptible compilation and disk-full detection (used by ``rfm_jax.training.loop``).

* ``first_non_finite(metrics)`` scans a step's metrics {name: [R]} and ``runs_finite(state)`` a
  whole train state (leading run axis R): the loop stops at the first NaN or inf with
  ``NonFiniteError`` and never checkpoints a non-finite state.
* ``stop_on_signal()`` turns the first SIGINT / SIGTERM into a flag the loop checks after each
  step (it then saves a checkpoint and returns); a second signal aborts.
* ``wait_interruptibly(fn, stop)`` runs ``fn`` (the compilation of the step functions, tens of
  seconds at the reference numerics) in a worker thread and raises ``Interrupted`` within
  ``poll`` seconds of a signal, instead of handling the signal only once XLA returns.
* ``is_disk_full(error)`` recognises ENOSPC however it is wrapped (orbax, tensorstore, the OS).
* ``UserError``: bad input the user can fix (a config field, the workdir), refused before
  anything is compiled or written (``rfm_jax.training.run``; the CLI prints it in one line).
* ``EnvError``: the environment failed while training or evaluating (it raised, returned an
  observation its space does not declare, or too many of its steps were invalid): one line, then
  the env's own traceback (``env_traceback``: the frames outside rfm_jax and Gymnasium's wrappers).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import traceback
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np


class UserError(ValueError):
    """Something the user can fix (a config field, the workdir, a flag): a one-line message naming
    it; ``experiments/run.py`` prints it as ``run.py: ...`` with exit status 2."""


class NonFiniteError(RuntimeError):
    """A training metric (loss, Q statistic, gradient norm, ...) or the state about to be
    checkpointed is NaN or infinite; the run stops without saving it."""


class Interrupted(RuntimeError):
    """A signal arrived before the first training step (while compiling): nothing was trained
    since the last checkpoint, so the run stops at once without saving."""


class EnvError(RuntimeError):
    """The environment failed mid-run: a one-line message (the task, the run, the env step, what
    went wrong and the checkpoint ``--resume`` continues from) and ``detail``, the env's own
    traceback (empty where the env raised nothing); ``experiments/run.py`` exits with status 3."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


_OURS = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)  # the rfm_jax package
_WRAPPERS = (os.sep + os.path.join("gymnasium", "wrappers") + os.sep, os.sep + os.path.join("gymnasium", "core.py"),
             os.sep + os.path.join("gymnasium", "utils", "passive_env_checker.py"))


def env_traceback(error: BaseException | None) -> str:
    """The traceback of the innermost cause of ``error`` without the frames of rfm_jax and of
    Gymnasium's wrappers: the user's env code and what it calls ("" for None)."""
    while error is not None and error.__cause__ is not None:
        error = error.__cause__
    if error is None:
        return ""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(_OURS) and not any(w in f.filename for w in _WRAPPERS)]
    return "".join(["Traceback (most recent call last):\n", *traceback.format_list(frames),
                    *traceback.format_exception_only(type(error), error)]).rstrip("\n")


def first_non_finite(metrics: dict) -> tuple[str, int, float] | None:
    """(name, run index, value) of the first non-finite entry of ``metrics`` {name: [R]}, or None."""
    for name in sorted(metrics):
        values = np.asarray(metrics[name], np.float64).reshape(-1)
        bad = ~np.isfinite(values)
        if bad.any():
            run = int(np.argmax(bad))
            return name, run, float(values[run])
    return None


@jax.jit
def runs_finite(state) -> jax.Array:
    """[R] bool: whether every floating leaf of run r's part of ``state`` (leading axis R) is finite."""
    flags = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in jax.tree.leaves(state)
             if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim >= 1]
    return jnp.all(jnp.stack(flags), axis=0)


@contextmanager
def stop_on_signal():
    """Yield a list that the first SIGINT/SIGTERM appends its number to; a second one raises
    KeyboardInterrupt.  Outside the main thread no handler is installed (the list stays empty)."""
    flag, previous = [], {}

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(signum)
        print(f"\nSignal {signum}: stopping at the end of the current step, with a checkpoint "
              "(send again to abort).", flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: no handler
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def wait_interruptibly(fn, stop: list, poll: float = 0.2):
    """``fn()`` run in a daemon thread; returns its result or re-raises its exception.  Raises
    ``Interrupted`` as soon as ``stop`` (from ``stop_on_signal``) is set, leaving the thread to
    finish on its own (its result is discarded)."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            out["error"] = error

    worker = threading.Thread(target=target, name="rfm_jax-compile", daemon=True)
    worker.start()
    while worker.is_alive():
        if stop:
            raise Interrupted(f"signal {stop[0]} while compiling")
        worker.join(poll)  # wakes up for signal handlers on POSIX
    if stop:
        raise Interrupted(f"signal {stop[0]} while compiling")
    if "error" in out:
        raise out["error"]
    return out["value"]


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` or one it was raised from is ENOSPC (OSError errno 28 or its message)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
