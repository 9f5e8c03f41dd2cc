"""Argument checks that fail at trace time with messages naming the offending argument."""

from __future__ import annotations

import jax.numpy as jnp


def check_rank(fn_name: str, arg_name: str, x, rank: int, meaning: str) -> None:
    """Raise ValueError unless ``x`` has ``rank`` dimensions; ``meaning`` is the expected shape."""
    ndim = jnp.ndim(x)
    if ndim != rank:
        raise ValueError(
            f"{fn_name}: `{arg_name}` must have shape {meaning} (rank {rank}), got shape {jnp.shape(x)}. "
            "Functions here act on one example: jax.vmap them over batch, particle or seed axes."
        )


def check_positive_int(fn_name: str, arg_name: str, value, minimum: int = 1) -> None:
    """Raise ValueError unless ``value`` is a Python int >= ``minimum`` (a static count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{fn_name}: `{arg_name}` must be a Python int >= {minimum}, got {value!r}.")
