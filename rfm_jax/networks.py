"""Networks (flax linen): the flow / diffusion policy network, a critic ensemble and a
tanh-Gaussian actor.  Each acts on one example; leading batch axes pass through ``Dense``.

VelocityNet (the reference architecture, method.md section 7): the input is
[s, x_t, emb(t), emb(log lambda)] with sinusoidal embeddings; Dense(width), then ``num_blocks``
residual blocks h <- h + Dense(GELU(Dense(LayerNorm(h)))), then Dense(A) of GELU(LayerNorm(h)).
It outputs a velocity (flow policy) or an epsilon (diffusion policy); the agent decides which.

CriticEnsemble: K independent ReLU MLPs on [s, a] (params stacked on a leading axis by
``nn.vmap``), output Q [K].

TanhGaussianActor: ReLU MLP -> (mean [A], log_std [A]) with log_std in [-5, 2]; see
``tanh_gaussian_sample``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rfm_jax.estimators import log_one_minus_tanh_sq

Array = jax.Array


def sinusoidal_embedding(x: Array, dim: int, max_period: float = 1000.0) -> Array:
    """[...] -> [..., dim]: [sin(x f_k), cos(x f_k)] with f_k log-spaced in [1, max_period]."""
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding: `dim` must be even, got {dim}.")
    freqs = jnp.exp(jnp.linspace(0.0, jnp.log(max_period), dim // 2))
    angles = jnp.asarray(x)[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class MLP(nn.Module):
    """Dense layers with ``activation`` between them; ``out`` outputs at the end."""

    hidden: Sequence[int]
    out: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = getattr(nn, self.activation)
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


class ResidualBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, h: Array) -> Array:
        y = nn.Dense(self.width)(nn.LayerNorm()(h))
        return h + nn.Dense(self.width)(nn.gelu(y))


class VelocityNet(nn.Module):
    """v(s [O], x_t [A], t [], temperature []) -> [A].  Leading axes broadcast numpy-style: e.g.
    obs [B, 1, O] with x_t [B, M, A] and a scalar t evaluates M particles per state."""

    action_dim: int
    width: int = 256
    num_blocks: int = 2
    embed_dim: int = 32

    @nn.compact
    def __call__(self, obs: Array, x_t: Array, t: Array, temperature: Array) -> Array:
        # Dense on the concatenation, written as a sum of per-part projections so that the state and
        # time terms are computed at their own (smaller) shapes and broadcast over particles.
        t, log_temperature = jnp.broadcast_arrays(jnp.asarray(t, jnp.float32), jnp.log(temperature))
        emb = jnp.concatenate(
            [sinusoidal_embedding(t, self.embed_dim), sinusoidal_embedding(log_temperature, self.embed_dim, 10.0)],
            axis=-1,
        )
        h = nn.Dense(self.width, name="in_action")(x_t)
        h = h + nn.Dense(self.width, use_bias=False, name="in_obs")(obs)
        h = h + nn.Dense(self.width, use_bias=False, name="in_time")(emb)
        for _ in range(self.num_blocks):
            h = ResidualBlock(self.width)(h)
        return nn.Dense(self.action_dim)(nn.gelu(nn.LayerNorm()(h)))


class CriticEnsemble(nn.Module):
    """Q(s [O], a [A]) -> [K] from K critics with independent parameters."""

    num_critics: int = 2
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: Array, action: Array) -> Array:
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        obs = jnp.broadcast_to(obs, (*action.shape[:-1], obs.shape[-1]))
        q = ensemble(hidden=tuple(self.hidden), out=1)(jnp.concatenate([obs, action], axis=-1))
        return jnp.moveaxis(q[..., 0], 0, -1)


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
    eps = jax.random.normal(key, mean.shape)
    u = mean + jnp.exp(log_std) * eps
    log_normal = -0.5 * eps**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    return jnp.tanh(u), jnp.sum(log_normal - log_one_minus_tanh_sq(u), axis=-1)
