"""JAX's threefry random-number hash lowered on CPU as the straight-line code JAX uses on GPU and
TPU, instead of its CPU default: a rolled loop of 5 iterations of small ops that XLA runs op by op
for every random draw and key split.  The bits are the same (integer arithmetic; a test checks
them)."""

from __future__ import annotations

from rfm_jax._speed import plain


def unroll_threefry_on_cpu() -> bool:
    """Register the straight-line lowering for CPU; affects programs lowered after the call, in this
    process.  This reaches into JAX's private modules: where they differ (another JAX version), or
    under ``RFM_JAX_PLAIN=1``, it does nothing and returns False."""
    if plain():
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry

        mlir.register_lowering(threefry.threefry2x32_p, threefry._threefry2x32_lowering_rule, platform="cpu")
    except (ImportError, AttributeError):
        return False
    return True
