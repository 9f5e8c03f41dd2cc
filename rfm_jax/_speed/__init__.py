"""CPU speed devices: the same numbers as plain JAX operations (bit for bit, or to float32
rounding), laid out so that XLA's CPU backend runs them faster.  ``docs/performance.md`` has the
measurements; the tests compare each with its plain form.

    normal_rows  a standard normal draw cut from 16-wide rows, kept out of its consumers' fusions
    matmuls      thin products, kernel-order weight gradients, a zero-padded dense head
    trig         sin and cos in vectorisable float32 arithmetic
    threefry     JAX's threefry hash lowered as straight-line code on CPU

The networks and agents use them (and ``rfm_jax.networks.min_critic``, the input gradient of
min_k Q_k through the argmin critic only, is built on ``plain``); the method layer
(``rfm_jax.method``) never does.  The speed devices import no other layer.
``RFM_JAX_PLAIN=1`` in the environment turns every one into the plain JAX operation (read when a
function is traced, so set it before the first compilation) and also drops rfm_jax's XLA flag
defaults (``rfm_jax.infra.runtime``).
"""

from __future__ import annotations

import os


def plain() -> bool:
    """Whether ``RFM_JAX_PLAIN=1``: every speed device is its plain JAX operation."""
    return os.environ.get("RFM_JAX_PLAIN", "0") == "1"
