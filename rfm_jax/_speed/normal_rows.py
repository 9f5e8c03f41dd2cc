"""Standard normal draws laid out for XLA CPU's vectorised loops.

``normal(key, shape)`` returns the first n = prod(shape) entries of

    jax.random.normal(key, (ceil(n / 16), 16))

in row-major order, reshaped to ``shape``: an N(0, I) draw like ``jax.random.normal(key, shape)``,
but cut from a 16-wide array (so not the same numbers for the same key).  Every normal draw of
the agents and networks goes through it (the estimators' through ``agents.particles.SOURCE``).

Why: the agents draw [particles, A] noise with A = 6 action columns.  XLA fuses a draw (threefry
bits, then erf_inv) into its consumers, whose innermost loop then runs over those 6 columns and
does not vectorise (``docs/performance.md`` has the cost).  ``normal`` draws rows of 16 floats
(one 512-bit vector) and, on CPU, passes them through a dot with the 16 x 16 identity, which XLA
does not fuse into the consumers.  The product is exact (x * 1 plus exact zeros; a normal draw is
never subnormal), so every backend gets the same numbers and only CPU pays the (tiny) dot.
``RFM_JAX_PLAIN=1`` leaves the dot out: the same numbers again.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rfm_jax._speed import plain

Array = jax.Array
ROW = 16  # floats per row of the draw: one 512-bit vector


def materialize(x: Array) -> Array:
    """x [..., C] unchanged, computed on its own: ``x @ I_C`` (x * 1 plus exact zeros: bit for bit
    for finite x, except that XLA CPU flushes subnormals to zero as in any arithmetic), which XLA
    keeps as a dot instead of fusing x's producer into x's consumers."""
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jnp.dot(x, eye, precision=jax.lax.Precision.HIGHEST)


def normal(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """A standard normal array of ``shape``: ``jax.random.normal(key, (ceil(n / 16), 16))``
    flattened, cut to n = prod(shape) and reshaped (materialised on CPU, see the module doc)."""
    shape = tuple(shape)
    n = math.prod(shape)
    rows = jax.random.normal(key, (max(1, -(-n // ROW)), ROW), dtype)
    if jax.default_backend() == "cpu" and not plain():
        rows = materialize(rows)
    return rows.reshape(-1)[:n].reshape(shape)
