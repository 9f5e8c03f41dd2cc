"""The critic ensemble (flax linen).

CriticEnsemble: K independent MLPs [s, a] -> ReLU layers -> 1 (each parameter stacked on a leading
K axis), orthogonal(sqrt 2) kernels; the first layer's state columns are applied to s alone, so
particles at one state share them (exact algebra again).  Output Q [..., K].

Layout for XLA on CPU (same numbers to float32 rounding; the products are in ``rfm_jax._speed.matmuls``):
the critics are applied one after another with plain 2-D matmuls (a vmap over K makes batched
dots with transposes between the layers), and the A input columns of an action (the critics' a,
the policy's u_t) go through ``thin_matmul``, a sum of A broadcast products that XLA fuses with the
bias and the activation, where a dot with an inner dimension of 6 is a separate, slow GEMM.  The
critics' first layer is ``kernel_matmul``, whose weight gradient is x^T g in the kernel's [in, out]
order (reverse mode only).  Derivatives stay dots.  docs/performance.md has the measured effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rfm_jax._speed.matmuls import THIN_ROWS, kernel_matmul
from rfm_jax.networks.init import ortho, stacked

Array = jax.Array


class CriticEnsemble(nn.Module):
    """Q(s [..., O], a [..., A]) -> [..., K] from K critics with independent parameters: layer j
    has ``kernel_j`` [K, fan_in, width] and ``bias_j`` [K, width]; ReLU between layers.  The first
    layer is s W[:O] + a W[O:] + b (state columns shared by every action at that state)."""

    num_critics: int = 2
    hidden: Sequence[int] = (256, 256)

    @staticmethod
    def layers(params) -> list[tuple[Array, Array]]:
        """[(kernel_j [K, fan_in, width], bias_j [K, width]), ...] of this module's parameters."""
        p = params["params"]
        return [(p[f"kernel_{j}"], p[f"bias_{j}"]) for j in range(len(p) // 2)]

    @classmethod
    def from_params(cls, params) -> CriticEnsemble:
        """The module whose parameters ``params`` are (K and the hidden widths read off them)."""
        layers = cls.layers(params)
        return cls(layers[0][0].shape[0], tuple(k.shape[-1] for k, _ in layers[:-1]))

    @nn.compact
    def __call__(self, obs: Array, action: Array) -> Array:
        obs_dim, widths = obs.shape[-1], (*self.hidden, 1)
        fans = (obs_dim + action.shape[-1], *self.hidden)
        kernels = [self.param(f"kernel_{j}", stacked(ortho, self.num_critics), (fan, width))
                   for j, (fan, width) in enumerate(zip(fans, widths, strict=True))]
        biases = [self.param(f"bias_{j}", nn.initializers.zeros_init(), (self.num_critics, width))
                  for j, width in enumerate(widths)]
        q = []
        for k in range(self.num_critics):
            w_in = kernels[0][k]
            w_s, w_a = w_in[:obs_dim], w_in[obs_dim:]
            h = kernel_matmul(obs, w_s) + biases[0][k] + kernel_matmul(action, w_a, w_a.shape[0] <= THIN_ROWS)
            for kernel, bias in zip(kernels[1:], biases[1:], strict=True):
                self.sow("intermediates", "pre_activations", h)  # critic-major; rfm_jax.networks.min_critic reads them
                h = nn.relu(h) @ kernel[k] + bias[k]
            q.append(h[..., 0])
        return jnp.stack(q, axis=-1)
