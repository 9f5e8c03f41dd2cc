"""Probability paths x_t = alpha(t) x1 + beta(t) x0, conversions and fixed-step samplers.

Convention (docs/method.md section 2): t = 0 is the source (noise, x0 ~ p0), t = 1 is data (x1 ~ p1).

| constructor             | alpha(t)              | beta(t)                     |
|-------------------------|-----------------------|-----------------------------|
| ``linear()``            | t                     | 1 - t                       |
| ``cosine()``            | sin(pi t / 2)         | cos(pi t / 2)               |
| ``vp(beta_min, beta_max)`` | sqrt(abar(1 - t))  | sqrt(1 - abar(1 - t))       |
| ``ve(sigma_min, sigma_max)`` | 1                | sigma_max^(1-t) sigma_min^t |

with abar(s) = exp(-(beta_min s + (beta_max - beta_min) s^2 / 2)) for the VP schedule.

Given the posterior means mu0 = E[X0 | x_t] and mu1 = E[X1 | x_t] (tied by
x_t = alpha mu1 + beta mu0) the regression targets are

    velocity   v   = alpha' mu1 + beta' mu0
    noise      eps = mu0
    data       x1  = mu1 = (x_t - beta mu0) / alpha
    score          = -mu0 / beta            (Gaussian source only)

All functions act on one point ``x`` of shape ``[A]`` with a scalar ``t``; vmap them for batches.
Schedule parameters are pytree leaves (sweepable under ``vmap``); the kind is static.
Samplers integrate from ``t_start`` to ``t_end``: ``x_start`` must be a draw of the marginal p_t at
``t_start`` (for linear / cosine with a small t_start that is close to the source N(0, I); for VP
it is N(0, I) only where alpha(t_start) ~ 0; for VE it is x1 + sigma(t_start) x0).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array
_KINDS = ("linear", "cosine", "vp", "ve")


def _as_time(t) -> Array:
    """t as a floating array (float32 unless it already is a float type)."""
    t = jnp.asarray(t)
    return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(jnp.float32)


def _is_concrete(*values) -> bool:
    return all(isinstance(v, int | float) for v in values)


@struct.dataclass
class Schedule:
    """A probability path. ``p_min`` / ``p_max`` are beta_min / beta_max (VP) or sigma_min /
    sigma_max (VE) and are unused by ``linear`` and ``cosine``."""

    kind: str = struct.field(pytree_node=False)
    p_min: Array | float = 0.0
    p_max: Array | float = 0.0

    def alpha(self, t):
        """Data coefficient alpha(t)."""
        return self._alpha_beta(t)[0]

    def beta(self, t):
        """Noise coefficient beta(t)."""
        return self._alpha_beta(t)[1]

    def d_alpha(self, t):
        """d alpha / dt (elementwise for an array t)."""
        t = _as_time(t)
        return jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))[1]

    def d_beta(self, t):
        """d beta / dt (elementwise for an array t)."""
        t = _as_time(t)
        return jax.jvp(self.beta, (t,), (jnp.ones_like(t),))[1]

    def _alpha_beta(self, t):
        t = _as_time(t)
        if self.kind == "linear":
            return t, 1.0 - t
        if self.kind == "cosine":
            return jnp.sin(0.5 * jnp.pi * t), jnp.cos(0.5 * jnp.pi * t)
        if self.kind == "vp":
            s = 1.0 - t
            log_abar = -(self.p_min * s + 0.5 * (self.p_max - self.p_min) * s**2)
            # beta = sqrt(1 - abar) written with expm1 for accuracy near t = 1.
            return jnp.exp(0.5 * log_abar), jnp.sqrt(-jnp.expm1(log_abar))
        if self.kind == "ve":
            log_sigma = (1.0 - t) * jnp.log(self.p_max) + t * jnp.log(self.p_min)
            return jnp.ones_like(t), jnp.exp(log_sigma)
        raise ValueError(f"Schedule.kind must be one of {_KINDS}, got {self.kind!r}")


def linear() -> Schedule:
    """Rectified-flow path: alpha = t, beta = 1 - t."""
    return Schedule("linear")


def cosine() -> Schedule:
    """Cosine variance-preserving path: alpha = sin(pi t/2), beta = cos(pi t/2)."""
    return Schedule("cosine")


def vp(beta_min: float = 0.1, beta_max: float = 20.0) -> Schedule:
    """Variance-preserving path with a linear noise rate beta(s) = beta_min + (beta_max - beta_min) s."""
    if _is_concrete(beta_min, beta_max) and not 0.0 <= beta_min < beta_max:
        raise ValueError(f"vp: need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
    return Schedule("vp", jnp.asarray(beta_min, jnp.float32), jnp.asarray(beta_max, jnp.float32))


def ve(sigma_min: float = 1e-5, sigma_max: float = 1.0) -> Schedule:
    """Variance-exploding path x_t = x1 + sigma(t) x0 with a geometric sigma(t)."""
    if _is_concrete(sigma_min, sigma_max) and not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"ve: need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return Schedule("ve", jnp.asarray(sigma_min, jnp.float32), jnp.asarray(sigma_max, jnp.float32))


# ----------------------------------------------------------------------------- conversions


def data_from_noise(schedule: Schedule, x_t: Array, t, noise_mean: Array) -> Array:
    """mu1 = (x_t - beta mu0) / alpha.  Shapes: x_t, noise_mean [A] -> [A]."""
    return (x_t - schedule.beta(t) * noise_mean) / schedule.alpha(t)


def noise_from_data(schedule: Schedule, x_t: Array, t, data_mean: Array) -> Array:
    """mu0 = (x_t - alpha mu1) / beta.  Shapes: x_t, data_mean [A] -> [A]."""
    return (x_t - schedule.alpha(t) * data_mean) / schedule.beta(t)


def velocity_from_means(schedule: Schedule, t, noise_mean: Array, data_mean: Array) -> Array:
    """v = alpha' mu1 + beta' mu0 (for the linear path: mu1 - mu0).  [A] -> [A]."""
    return schedule.d_alpha(t) * data_mean + schedule.d_beta(t) * noise_mean


def velocity_from_noise(schedule: Schedule, x_t: Array, t, noise_mean: Array) -> Array:
    """v = (alpha'/alpha) x_t + ((alpha beta' - alpha' beta)/alpha) mu0.  [A] -> [A]."""
    return velocity_from_means(schedule, t, noise_mean, data_from_noise(schedule, x_t, t, noise_mean))


def noise_from_velocity(schedule: Schedule, x_t: Array, t, velocity: Array) -> Array:
    """Inverse of ``velocity_from_noise``: mu0 = (alpha v - alpha' x_t) / (alpha beta' - alpha' beta)."""
    a, b, da, db = schedule.alpha(t), schedule.beta(t), schedule.d_alpha(t), schedule.d_beta(t)
    return (a * velocity - da * x_t) / (a * db - da * b)


def score_from_noise(schedule: Schedule, t, noise_mean: Array) -> Array:
    """grad log p_t(x_t) = -mu0 / beta (valid for a standard-normal source).  [A] -> [A]."""
    return -noise_mean / schedule.beta(t)


# ----------------------------------------------------------------------------- samplers


def time_grid(num_steps: int, t_start, t_end) -> Array:
    """The samplers' grid t_0 = t_start < ... < t_K = t_end, K = ``num_steps``, float32.  [K + 1]."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    return jnp.linspace(t_start, t_end, num_steps + 1, dtype=jnp.float32)


def sample_euler(velocity_fn: Callable, x_start: Array, *, num_steps: int, t_start=0.0, t_end=1.0) -> Array:
    """Integrate dx/dt = velocity_fn(x, t) from ``t_start`` to ``t_end`` with explicit Euler.

    ``velocity_fn(x [A], t []) -> [A]``; ``x_start`` [A] -> x at ``t_end`` [A].
    """
    ts = time_grid(num_steps, t_start, t_end)
    x_end, _ = jax.lax.scan(lambda x, t_pair: (euler_step(velocity_fn, x, *t_pair), None), x_start, (ts[:-1], ts[1:]))
    return x_end


def euler_step(velocity_fn: Callable, x: Array, t, t_next) -> Array:
    """One Euler step of ``sample_euler``: x + (t_next - t) velocity_fn(x, t).  [A] -> [A]."""
    return x + (t_next - t) * velocity_fn(x, t)


def sample_heun(velocity_fn: Callable, x_start: Array, *, num_steps: int, t_start=0.0, t_end=1.0) -> Array:
    """Heun's second-order method (explicit trapezoid) for dx/dt = velocity_fn(x, t).  [A] -> [A]."""
    ts = time_grid(num_steps, t_start, t_end)

    def step(x, t_pair):
        t, t_next = t_pair
        dt = t_next - t
        v = velocity_fn(x, t)
        v_next = velocity_fn(x + dt * v, t_next)
        return x + 0.5 * dt * (v + v_next), None

    x_end, _ = jax.lax.scan(step, x_start, (ts[:-1], ts[1:]))
    return x_end


def sample_ddim(
    noise_fn: Callable, x_start: Array, *, schedule: Schedule, num_steps: int, t_start=0.01, t_end=1.0,
    x1_bound: float | None = None,
) -> Array:
    """Deterministic DDIM-style sampler for a noise-prediction network ``noise_fn(x, t) -> eps``.

    Each step predicts x1 = (x - beta_t eps) / alpha_t and moves to x' = alpha_s x1 + beta_s eps.
    ``t_start`` must have alpha > 0 (e.g. 0.01 for linear / cosine).  With ``x1_bound`` the
    prediction is clipped to [-bound, bound] and eps recomputed from it, eps = (x - alpha_t x1) /
    beta_t (the "clip denoised" of DDPM codes).  [A] -> [A].
    """
    ts = time_grid(num_steps, t_start, t_end)

    def step(x, t_pair):
        return ddim_step(noise_fn, x, *t_pair, schedule=schedule, x1_bound=x1_bound), None

    x_end, _ = jax.lax.scan(step, x_start, (ts[:-1], ts[1:]))
    return x_end


def ddim_step(noise_fn: Callable, x: Array, t, s, *, schedule: Schedule, x1_bound: float | None = None) -> Array:
    """One step of ``sample_ddim`` from t to s > t: alpha_s x1_hat + beta_s eps_hat.  [A] -> [A]."""
    eps = noise_fn(x, t)
    x1 = data_from_noise(schedule, x, t, eps)
    if x1_bound is not None:
        x1 = jnp.clip(x1, -x1_bound, x1_bound)
        eps = noise_from_data(schedule, x, t, x1)
    return schedule.alpha(s) * x1 + schedule.beta(s) * eps


def sample_ddpm(
    key: Array,
    noise_fn: Callable,
    x_start: Array,
    *,
    schedule: Schedule,
    num_steps: int,
    t_start=0.01,
    t_end=1.0,
    normal: Callable = jax.random.normal,
) -> Array:
    """Stochastic ancestral (DDPM-style) sampler for a noise-prediction network; ``normal(key,
    shape, dtype)`` draws its step noise.

    From t to a cleaner s > t it draws from the Gaussian bridge q(x_s | x_t, x1 = x1_hat):

        a = alpha_t / alpha_s,   var_ts = beta_t^2 - a^2 beta_s^2
        mean = (a beta_s^2 / beta_t^2) x_t + (alpha_s var_ts / beta_t^2) x1_hat
        var  = var_ts beta_s^2 / beta_t^2

    Valid when beta/alpha decreases in t (all schedules here).  [A] -> [A].
    """
    ts = time_grid(num_steps, t_start, t_end)
    keys = jax.random.split(key, num_steps)

    def step(x, inputs):
        t, s, key_step = inputs
        a_t, b_t, a_s, b_s = schedule.alpha(t), schedule.beta(t), schedule.alpha(s), schedule.beta(s)
        x1 = data_from_noise(schedule, x, t, noise_fn(x, t))
        ratio = a_t / a_s
        var_ts = jnp.maximum(b_t**2 - ratio**2 * b_s**2, 0.0)
        mean = (ratio * b_s**2 / b_t**2) * x + (a_s * var_ts / b_t**2) * x1
        std = jnp.sqrt(var_ts * b_s**2 / b_t**2)
        return mean + std * normal(key_step, x.shape, x.dtype), None

    x_end, _ = jax.lax.scan(step, x_start, (ts[:-1], ts[1:], keys))
    return x_end
