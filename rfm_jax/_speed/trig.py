"""(sin x, cos x) in vectorisable float32 arithmetic: XLA's CPU backend calls a scalar routine per
element for ``jnp.sin`` and ``jnp.cos`` (``docs/performance.md`` has the timing)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rfm_jax._speed import plain

Array = jax.Array
# pi / 2 in three float32 parts (8, 16 and 24 significant bits) for the argument reduction.
_HALF_PI_PARTS = (1.5703125, 4.837512969970703125e-4, 7.549789954891882e-8)


def sin_cos(x: Array) -> tuple[Array, Array]:
    """(sin x, cos x) of a float32 array, elementwise (``jnp.sin`` / ``jnp.cos`` under
    ``RFM_JAX_PLAIN=1``).

    x = k pi/2 + r with k = round(2x / pi) and r in [-pi/4, pi/4] (pi/2 in three parts, so k pi/2
    is exact for |k| < 2^15), Taylor series of sin r to r^11 and cos r to r^12 (truncation below
    1e-11), then the quadrant k mod 4.  Absolute error below 1.2 * 2^-23 for |x| <= 3e4 (measured
    6.8e-8; ``jnp.sin`` / ``jnp.cos``: 3.2e-8); the embeddings' arguments are t f_k and lambda f_k
    with f_k <= 1.
    """
    x = jnp.asarray(x, jnp.float32)
    if plain():
        return jnp.sin(x), jnp.cos(x)
    k = jnp.round(x * (2 / jnp.pi))
    r = x
    for part in _HALF_PI_PARTS:
        r = r - k * part
    z = r * r
    sin_r = r + r * z * (-1 / 6 + z * (1 / 120 + z * (-1 / 5040 + z * (1 / 362880 + z * (-1 / 39916800)))))
    cos_r = 1 + z * (-1 / 2 + z * (1 / 24 + z * (-1 / 720 + z * (1 / 40320 + z * (-1 / 3628800 + z / 479001600)))))
    quadrant = k.astype(jnp.int32) & 3
    swap, sin_negative, cos_negative = quadrant % 2 == 1, quadrant >= 2, (quadrant == 1) | (quadrant == 2)
    sin_x, cos_x = jnp.where(swap, cos_r, sin_r), jnp.where(swap, sin_r, cos_r)
    return jnp.where(sin_negative, -sin_x, sin_x), jnp.where(cos_negative, -cos_x, cos_x)
