"""The policy networks (flax linen); each acts on one example, leading batch axes broadcast.

PolicyNet, the reference actor (docs/method.md section 7.1), v(s, u_t, t, lambda) -> [A]:

    x   = [s (O), u_t (A), emb(t) (E), emb(lambda) (E)],   emb(x) = [sin(x f_k), cos(x f_k)],
          f_k = exp(-k ln(1000) / (E/2 - 1)), k = 0 .. E/2 - 1   (raw t and raw lambda)
    h   = GELU(W_in x + b_in)                                   W_in: [O + A + 2E, width]
    h  <- h + GELU(W_j h + b_j)          j = 1 .. num_blocks    ("reference" block)
    out = W_out h + b_out

Every kernel is orthogonal(sqrt 2), every bias zero.  At O = 17, A = 6, E = 128, width 256 and two
blocks this has 204,806 parameters.  ``block="prenorm"`` swaps in h <- h + W'GELU(W LN(h)) blocks
and a GELU(LN(h)) before the head (no GELU after the input layer).

W_in x is linear, so W_in x = W_u u_t + (W_s s + W_lam emb(lambda) + b_in) + W_t emb(t): the
sampler computes ``condition`` (the bracket, [width]) once per state and W_t emb(t) once per ODE
step, and only W_u u_t ([A] -> [width]) per particle.  ``__call__`` is the plain concatenation.
The head is a ``PaddedDense``: W_out's A columns padded with zeros to a multiple of 8 for the
product (faster on XLA's CPU dot), the same parameters as ``nn.Dense``.

The A input columns of u_t go through ``thin_matmul`` (``rfm_jax._speed.matmuls``) and the
embeddings' sin and cos through ``rfm_jax._speed.trig``: the same numbers to float32 rounding.

TanhGaussianActor (SAC): ReLU MLP -> (mean [A], log_std [A]) with log_std in [-5, 2].
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rfm_jax._speed import normal_rows
from rfm_jax._speed.matmuls import PaddedDense, input_matmul
from rfm_jax._speed.trig import sin_cos
from rfm_jax.method.estimators import log_one_minus_tanh_sq
from rfm_jax.networks.init import ortho

Array = jax.Array
BLOCKS = ("reference", "prenorm")


def sinusoidal_embedding(x: Array, dim: int, max_period: float = 1000.0) -> Array:
    """[...] -> [..., dim]: [sin(x f_k), cos(x f_k)], f_k = max_period^(-k / (dim/2 - 1)) (1 down to
    1 / max_period), by ``sin_cos``."""
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoidal_embedding: `dim` must be even and >= 4, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) / (half - 1) * jnp.arange(half))
    angles = jnp.asarray(x, jnp.float32)[..., None] * freqs
    return jnp.concatenate(sin_cos(angles), axis=-1)


class MLP(nn.Module):
    """Dense layers with ``activation`` between them; ``out`` outputs at the end."""

    hidden: Sequence[int]
    out: int
    activation: str = "relu"
    kernel_init: callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = getattr(nn, self.activation)
        for width in self.hidden:
            x = act(nn.Dense(width, kernel_init=self.kernel_init)(x))
        return nn.Dense(self.out, kernel_init=self.kernel_init)(x)


class PolicyNet(nn.Module):
    """The reference actor (module docstring): the velocity of a flow policy, or the epsilon / score
    network of a diffusion policy.  ``obs_dim`` fixes the input layer's row split."""

    obs_dim: int
    action_dim: int
    width: int = 256
    num_blocks: int = 2
    embed_dim: int = 128
    block: str = "reference"

    def setup(self):
        if self.block not in BLOCKS:
            raise ValueError(f"PolicyNet: `block` must be one of {BLOCKS}, got {self.block!r}.")
        rows = self.obs_dim + self.action_dim + 2 * self.embed_dim
        self.kernel_in = self.param("kernel_in", ortho, (rows, self.width))
        self.bias_in = self.param("bias_in", nn.initializers.zeros_init(), (self.width,))
        self.hidden = [nn.Dense(self.width, kernel_init=ortho, name=f"block_{j}") for j in range(self.num_blocks)]
        if self.block == "prenorm":
            self.hidden_out = [nn.Dense(self.width, kernel_init=ortho, name=f"block_{j}_out")
                               for j in range(self.num_blocks)]
            self.norms = [nn.LayerNorm(name=f"norm_{j}") for j in range(self.num_blocks + 1)]
        self.head = PaddedDense(self.action_dim, kernel_init=ortho, name="head")

    def _rows(self):
        """Row blocks of W_in: (state, action, time, temperature)."""
        o, a, e = self.obs_dim, self.action_dim, self.embed_dim
        k = self.kernel_in
        return k[:o], k[o:o + a], k[o + a:o + a + e], k[o + a + e:]

    def condition(self, obs: Array, temperature: Array) -> Array:
        """W_s s + W_lam emb(lambda) + b_in: obs [..., O], temperature [...] -> [..., width]."""
        w_s, _, _, w_lam = self._rows()
        return obs @ w_s + sinusoidal_embedding(temperature, self.embed_dim) @ w_lam + self.bias_in

    def from_condition(self, cond: Array, x_t: Array, t: Array) -> Array:
        """v from ``condition``'s output: cond [..., width], x_t [..., A], t [...] -> [..., A]."""
        _, w_u, w_t, _ = self._rows()
        return self._trunk(input_matmul(x_t, w_u) + sinusoidal_embedding(t, self.embed_dim) @ w_t + cond)

    def __call__(self, obs: Array, x_t: Array, t: Array, temperature: Array) -> Array:
        """v(s, u_t, t, lambda) by the plain concatenation: obs [..., O], x_t [..., A], t and
        temperature [...] (broadcast) -> [..., A]."""
        shape = jnp.broadcast_shapes(obs.shape[:-1], x_t.shape[:-1], jnp.shape(t), jnp.shape(temperature))
        x = jnp.concatenate([jnp.broadcast_to(obs, (*shape, self.obs_dim)),
                             jnp.broadcast_to(x_t, (*shape, self.action_dim)),
                             sinusoidal_embedding(jnp.broadcast_to(t, shape), self.embed_dim),
                             sinusoidal_embedding(jnp.broadcast_to(temperature, shape), self.embed_dim)], axis=-1)
        return self._trunk(x @ self.kernel_in + self.bias_in)

    def _trunk(self, h: Array) -> Array:
        if self.block == "reference":
            h = nn.gelu(h)
            for dense in self.hidden:
                h = h + nn.gelu(dense(h))
            return self.head(h)
        for dense, dense_out, norm in zip(self.hidden, self.hidden_out, self.norms, strict=False):
            h = h + dense_out(nn.gelu(dense(norm(h))))
        return self.head(nn.gelu(self.norms[-1](h)))


class TanhGaussianActor(nn.Module):
    """s [O] -> (mean [A], log_std [A]) of the pre-tanh Gaussian."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: Array) -> tuple[Array, Array]:
        out = MLP(tuple(self.hidden), 2 * self.action_dim)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


def tanh_gaussian_sample(key: Array, mean: Array, log_std: Array) -> tuple[Array, Array]:
    """a = tanh(mean + std eps) and log pi(a) = log N(u; mean, std) - sum_j log(1 - tanh(u_j)^2)."""
    eps = normal_rows.normal(key, mean.shape)
    u = mean + jnp.exp(log_std) * eps
    log_normal = -0.5 * eps**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    return jnp.tanh(u), jnp.sum(log_normal - log_one_minus_tanh_sq(u), axis=-1)
