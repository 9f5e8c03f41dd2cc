"""Log-density of a flow policy's action by the change of variables along its sampling ODE: the
math of one example (vmap it over samples, states and seeds).

Sampling integrates du/dt = v(u, t) from u_0 ~ N(0, I) over the grid t_0 < ... < t_K (Euler) and
squashes a = tanh(u_K).  Along that path

    log p(u_K) = log N(u_0; 0, I) - int div_u v(u(t), t) dt
               ~ log N(u_0; 0, I) - sum_k (t_{k+1} - t_k) div_u v(u_k, t_k)
    log p(a)   = log p(u_K) - sum_j log(1 - tanh(u_K,j)^2)

so the policy's entropy is H = -E[log p(a)] over its samples.  div_u v = tr(dv/du) is exact with
one JVP per dimension (``jax.jacfwd``) up to ``EXACT_MAX_DIM`` action dimensions; above, or when
a key is given, it is Hutchinson's unbiased estimate mean_z z^T (dv/du) z over ``num_probes``
Rademacher vectors z (one JVP each).  The sum over steps is the Euler path's instantaneous
change of variables: it converges to the ODE's log-density as the grid refines (the difference
from the exact log-determinant of one Euler step, log det(I + dt J) - dt tr J, is
-dt^2 tr(J^2) / 2 + O(dt^3)).  A DDIM sampler (a deterministic ODE) follows the same route with
its own drift.

``sampler_log_prob`` takes the discrete route instead, for any deterministic sampler (the agents'
Euler and DDIM): with u_{k+1} = F_k(u_k) one sampler step,

    log p(u_K) = log N(u_0; 0, I) - sum_k log|det dF_k/du (u_k)|,

exact for the sampler as run (the density of its actual pushforward), with the Jacobian from A
JVPs up to ``EXACT_MAX_DIM``; above, a step near the identity has log|det J| = tr(J - I) +
O(|J - I|^2), estimated by Hutchinson.

Shapes: u_0 [A]; ``velocity_fn(u [A], t []) -> [A]``; ``step_fn(u [A], t [], t_next []) -> [A]``;
ts [K + 1].
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from rfm_jax.method.validation import check_rank

Array = jax.Array
EXACT_MAX_DIM = 32  # action dimensions up to which the divergence is exact (A JVPs per step)


def divergence(fn: Callable[[Array], Array], u: Array, key: Array | None = None, num_probes: int = 1) -> Array:
    """tr(d fn / du) at u [A]: exact (``key`` None) or Hutchinson with ``num_probes`` Rademacher probes."""
    check_rank("divergence", "u", u, 1, "[A]")
    if key is None:
        return jnp.trace(jax.jacfwd(fn)(u))
    probes = jax.random.rademacher(key, (num_probes, u.shape[0]), dtype=u.dtype)
    jvp = jax.vmap(lambda z: jax.jvp(fn, (u,), (z,))[1])(probes)
    return jnp.mean(jnp.sum(probes * jvp, axis=-1))


def standard_normal_log_prob(u: Array) -> Array:
    """log N(u; 0, I) for u [A]."""
    return -0.5 * jnp.sum(u**2) - 0.5 * u.shape[0] * jnp.log(2.0 * jnp.pi)


def euler_log_prob(velocity_fn: Callable[[Array, Array], Array], u0: Array, ts: Array, key: Array | None = None,
                   num_probes: int = 1) -> tuple[Array, Array]:
    """(u_K [A], log p(u_K) []) of the Euler path from u0 over the grid ts [K + 1].

    ``key`` None uses the exact divergence when A <= ``EXACT_MAX_DIM`` (and Hutchinson with a
    fixed key above it); a key always uses Hutchinson, with a fresh split per step."""

    def step(u, t, t_next, key_k):
        div = divergence(lambda x: velocity_fn(x, t), u, key_k, num_probes)
        return u + (t_next - t) * velocity_fn(u, t), (t_next - t) * div

    return _along_path("euler_log_prob", step, u0, ts, key)


def _along_path(name: str, step, u0: Array, ts: Array, key: Array | None) -> tuple[Array, Array]:
    """log N(u0; 0, I) minus the sum of the log-volume changes along the grid ts [K + 1], where
    ``step(u, t, t_next, key_k) -> (u_next, log-volume change)``; the keys as ``euler_log_prob``."""
    check_rank(name, "u0", u0, 1, "[A]")
    check_rank(name, "ts", ts, 1, "[K + 1]")
    if key is None and u0.shape[0] > EXACT_MAX_DIM:
        key = jax.random.PRNGKey(0)
    keys = jax.random.split(key, ts.shape[0] - 1) if key is not None else None

    def body(carry, k):
        u, log_p = carry
        u_next, change = step(u, ts[k], ts[k + 1], None if keys is None else keys[k])
        return (u_next, log_p - change), None

    (u, log_p), _ = jax.lax.scan(body, (u0, standard_normal_log_prob(u0)), jnp.arange(ts.shape[0] - 1))
    return u, log_p


def tanh_log_prob(u: Array, log_p_u: Array) -> Array:
    """log p(a) of a = tanh(u) from log p(u): minus sum_j log(1 - tanh(u_j)^2), computed stably as
    2 (log 2 - u - softplus(-2u))."""
    check_rank("tanh_log_prob", "u", u, 1, "[A]")
    return log_p_u - jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)))


def step_log_det(step_fn: Callable[[Array], Array], u: Array, key: Array | None = None, num_probes: int = 1) -> Array:
    """log|det d step_fn / du| at u [A]: exact (``key`` None: slogdet of the Jacobian) or, with a
    key, Hutchinson's estimate of tr(J) - A (the first order for a step near the identity)."""
    check_rank("step_log_det", "u", u, 1, "[A]")
    if key is None:
        return jnp.linalg.slogdet(jax.jacfwd(step_fn)(u))[1]
    return divergence(step_fn, u, key, num_probes) - u.shape[0]


def sampler_log_prob(step_fn: Callable[[Array, Array, Array], Array], u0: Array, ts: Array,
                     key: Array | None = None, num_probes: int = 1) -> tuple[Array, Array]:
    """(u_K [A], log p(u_K) []) of a deterministic sampler from u0 ~ N(0, I) over the grid ts [K + 1]
    (module docstring): exact up to ``EXACT_MAX_DIM`` dimensions with ``key`` None, Hutchinson
    (a fresh split per step; a fixed key above the size when none is given) otherwise."""

    def step(u, t, t_next, key_k):
        fn = lambda x: step_fn(x, t, t_next)  # noqa: E731
        return fn(u), step_log_det(fn, u, key_k, num_probes)

    return _along_path("sampler_log_prob", step, u0, ts, key)
