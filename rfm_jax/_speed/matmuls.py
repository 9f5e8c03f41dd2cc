"""Matrix products laid out for XLA's CPU dot, with the numbers of the plain product to float32
rounding.  The networks (``rfm_jax.networks``) use them; ``docs/performance.md`` has the
measurements.  Under ``RFM_JAX_PLAIN=1`` each is the plain ``x @ w`` (and ``nn.Dense``'s product).

* ``thin_matmul(x, w)``: x [..., K] @ w [K, N] for a small K (an action's columns) as
  sum_k x[..., k, None] * w[k], elementwise work that XLA fuses with the bias and the activation,
  where a dot with an inner dimension of 6 is a separate, slow product.  Forward and reverse mode.
* ``input_matmul(x, w)``: ``thin_matmul`` when w has at most ``THIN_ROWS`` rows, else ``x @ w``.
* ``kernel_matmul(x, w, thin)``: x [..., K] @ w [K, N] (by ``thin_matmul`` when ``thin``) whose
  weight cotangent is formed as

      dw = sum over leading axes of x^T g      [K, N], in w's own order,

  where JAX's transpose of a dot forms (g^T x)^T.  Under a vmap over one seed, XLA drops the
  size-1 seed axis and compiles that as an [N, K] product read back transposed; for the critics'
  first layer (K = 17 state or 6 action columns, N = 256, a batch B = 256) its CPU dot runs the
  [256, B] x [B, 17] product several times slower than [17, B] x [B, 256].  Reverse mode only.
  Apply it to whole batches (as the critics' TD loss does): under a ``vmap`` over examples with an
  unbatched w, a custom VJP forms the weight cotangent per example and then sums it.
* ``PaddedDense``: ``nn.Dense`` whose kernel is padded with zero columns to a multiple of 8 for the
  product and the output cut back (XLA's CPU dot runs [rows, 256] x [256, 8] faster than
  [rows, 256] x [256, 6]).  Plain: ``nn.Dense``'s product, no padding.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from rfm_jax._speed import plain

Array = jax.Array
THIN_ROWS = 16  # a matmul whose weight has at most this many rows is done by ``thin_matmul``


@jax.custom_jvp
def thin_matmul(x: Array, w: Array) -> Array:
    """x [..., K] @ w [K, N] as sum_k x[..., k, None] * w[k]: elementwise work that XLA fuses with
    what consumes it.  Its derivatives are the usual dots (dx @ w, x @ dw)."""
    return sum(x[..., k, None] * w[k] for k in range(w.shape[0]))


thin_matmul.defjvps(lambda dx, _, x, w: dx @ w, lambda dw, _, x, w: x @ dw)


def input_matmul(x: Array, w: Array) -> Array:
    """x @ w, by ``thin_matmul`` when w has at most ``THIN_ROWS`` rows (an action's columns)."""
    return thin_matmul(x, w) if w.shape[0] <= THIN_ROWS and not plain() else x @ w


def kernel_matmul(x: Array, w: Array, thin: bool = False) -> Array:
    """x [..., K] @ w [K, N] -> [..., N] (by ``thin_matmul`` when ``thin``); the weight cotangent
    is x^T g in w's [K, N] order (module docstring).  Reverse mode only (plain: ``x @ w``)."""
    return x @ w if plain() else _kernel_matmul(x, w, thin)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _kernel_matmul(x: Array, w: Array, thin: bool = False) -> Array:
    return thin_matmul(x, w) if thin else x @ w


def _kernel_matmul_fwd(x, w, thin):
    return (thin_matmul(x, w) if thin else x @ w), (x, w)


def _kernel_matmul_bwd(thin, res, g):
    x, w = res
    x_rows, g_rows = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    return g @ w.T, jnp.einsum("bk,bn->kn", x_rows, g_rows)


_kernel_matmul.defvjp(_kernel_matmul_fwd, _kernel_matmul_bwd)


class PaddedDense(nn.Module):
    """``nn.Dense`` (same parameter names, shapes and initial values) whose kernel is padded with
    zero columns to a multiple of ``multiple`` for the product, and the output cut back.  For a
    narrow output (the policy head's A = 6 columns) XLA's CPU dot runs a [rows, 256] x [256, 8]
    product faster than [rows, 256] x [256, 6]; the zero columns change nothing but
    the summation order of the product (float32 rounding).  One output column is left as it is
    (XLA emits a matrix-vector product for it, which is faster still)."""

    features: int
    kernel_init: callable = nn.initializers.lecun_normal()
    multiple: int = 8

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        padded = -(-self.features // self.multiple) * self.multiple
        if self.features > 1 and padded != self.features and not plain():  # one column stays a matrix-vector product
            kernel = jnp.pad(kernel, ((0, 0), (0, padded - self.features)))
        return (x @ kernel)[..., :self.features] + bias
