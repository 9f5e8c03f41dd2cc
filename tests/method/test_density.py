"""The flow policy's log-density by the divergence route (``rfm_jax.method.density``) against
closed forms: a linear flow, whose Euler pushforward of N(0, I) is a known Gaussian; the discrete
route (``sampler_log_prob``) on the agents' own Euler and DDIM steps with linear networks, whose
pushforwards are known Gaussians; Hutchinson's estimate against the exact trace; the tanh
correction; under jit and vmap."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax.method import schedules
from rfm_jax.method.density import (
    EXACT_MAX_DIM,
    divergence,
    euler_log_prob,
    sampler_log_prob,
    standard_normal_log_prob,
    tanh_log_prob,
)

K = 400
TS = jnp.linspace(0.0, 1.0, K + 1)


def _linear(dim, key, scale=0.5):
    return scale * jax.random.normal(key, (dim, dim)) / math.sqrt(dim)


def test_linear_flow_matches_the_gaussian_pushforward_and_the_ode():
    """v(u, t) = A u: Euler maps u0 to M u0 with M = (I + dt A)^K, so u_K ~ N(0, M M^T) and
    log p(u_K) = log N(u0) - log|det M|.  The route gives log N(u0) - tr A, the ODE's exact
    log-density (the flow map exp(A)); the two differ by K (log|det(I + dt A)| - dt tr A), which
    is checked to be below 2e-3 here, and the route equals the ODE's value to float error."""
    a = _linear(3, jax.random.PRNGKey(0))
    u0 = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    u_k, log_p = jax.jit(jax.vmap(lambda u: euler_log_prob(lambda x, t: a @ x, u, TS)))(u0)
    m = jnp.linalg.matrix_power(jnp.eye(3) + a / K, K)
    np.testing.assert_allclose(u_k, u0 @ m.T, rtol=1e-4, atol=1e-5)
    log_n = jax.vmap(standard_normal_log_prob)(u0)
    np.testing.assert_allclose(log_p, log_n - jnp.trace(a), rtol=1e-5, atol=1e-4)  # the ODE's
    gap = K * (jnp.linalg.slogdet(jnp.eye(3) + a / K)[1] - jnp.trace(a) / K)
    assert abs(float(gap)) < 2e-3
    np.testing.assert_allclose(log_p, log_n - jnp.linalg.slogdet(m)[1], atol=2e-3 + 1e-4)  # the pushforward's


def test_the_entropy_of_a_linear_flow_is_its_gaussians():
    """H = -E[log p(u_K)] over 4000 samples against 0.5 log det(2 pi e M M^T); tolerance 4 Monte
    Carlo standard errors plus the Euler gap."""
    a = _linear(2, jax.random.PRNGKey(2), scale=0.8)
    u0 = jax.random.normal(jax.random.PRNGKey(3), (4000, 2))
    _, log_p = jax.jit(jax.vmap(lambda u: euler_log_prob(lambda x, t: a @ x, u, TS)))(u0)
    m = jnp.linalg.matrix_power(jnp.eye(2) + a / K, K)
    exact = 0.5 * jnp.linalg.slogdet(2 * jnp.pi * jnp.e * m @ m.T)[1]
    error = 4 * float(jnp.std(log_p)) / math.sqrt(4000) + 3e-3
    assert abs(float(-jnp.mean(log_p)) - float(exact)) < error


def test_hutchinson_is_unbiased_and_exact_for_a_diagonal_jacobian_above_the_exact_size():
    w = jax.random.normal(jax.random.PRNGKey(4), (5, 5))
    fn = lambda u: jnp.tanh(w @ u + 0.3)  # noqa: E731
    u = jax.random.normal(jax.random.PRNGKey(5), (5,))
    exact = divergence(fn, u)
    np.testing.assert_allclose(exact, jnp.trace(jax.jacrev(fn)(u)), rtol=1e-5)
    probes = jax.vmap(lambda k: divergence(fn, u, k, 1))(jax.random.split(jax.random.PRNGKey(6), 4000))
    assert abs(float(jnp.mean(probes) - exact)) < 4 * float(jnp.std(probes)) / math.sqrt(4000)
    dim = EXACT_MAX_DIM + 8  # above it the route switches to Rademacher probes: z^T D z = tr D for diagonal D
    d = jax.random.uniform(jax.random.PRNGKey(7), (dim,), minval=-1, maxval=1)
    u0 = jax.random.normal(jax.random.PRNGKey(8), (dim,))
    _, log_p = jax.jit(lambda u: euler_log_prob(lambda x, t: d * x, u, TS))(u0)
    np.testing.assert_allclose(log_p, standard_normal_log_prob(u0) - jnp.sum(d), rtol=1e-5, atol=1e-4)


def test_the_tanh_correction_gives_a_density_on_the_interval():
    """u ~ N(0.4, 0.8^2) in 1-D: p(a) of a = tanh(u) from the route integrates to 1 over (-1, 1)
    and equals the change of variables at a few points."""
    a = jnp.linspace(-1 + 1e-6, 1 - 1e-6, 200_001)
    u = jnp.arctanh(a)
    log_p_u = -0.5 * ((u - 0.4) / 0.8) ** 2 - jnp.log(0.8 * jnp.sqrt(2 * jnp.pi))
    log_p_a = jax.vmap(lambda x, lp: tanh_log_prob(x[None], lp))(u, log_p_u)
    np.testing.assert_allclose(jnp.trapezoid(jnp.exp(log_p_a), a), 1.0, atol=1e-3)
    np.testing.assert_allclose(log_p_a[::40_000], (log_p_u - jnp.log1p(-a**2))[::40_000], rtol=1e-4)


def _gaussian_log_prob(x, g):
    """log N(x; 0, G G^T) for x [N, A] (float64)."""
    g = np.asarray(g, np.float64)
    z = np.linalg.solve(g, np.asarray(x, np.float64).T).T
    return -0.5 * np.sum(z**2, -1) - np.linalg.slogdet(g)[1] - 0.5 * g.shape[0] * math.log(2 * math.pi)


def test_the_discrete_route_is_exact_for_the_euler_and_ddim_samplers_of_linear_networks():
    """Euler on v = A u (10 steps) maps u0 to (I + dt A)^10 u0; DDIM on a cosine path with eps = M x
    (10 steps) applies (alpha_s / alpha_t) I + (beta_s - alpha_s beta_t / alpha_t) M per step.  The
    route's log p(u_K) equals log N(u_K; 0, G G^T) of the product G to float32 error."""
    a = np.asarray(_linear(3, jax.random.PRNGKey(10), scale=0.8))
    ts = schedules.time_grid(10, 0.01, 0.99)
    u0 = jax.random.normal(jax.random.PRNGKey(11), (64, 3))
    euler = lambda x, t, t_next: schedules.euler_step(lambda y, _: a @ y, x, t, t_next)  # noqa: E731
    cosine = schedules.cosine()
    ddim = lambda x, t, s: schedules.ddim_step(lambda y, _: a @ y, x, t, s, schedule=cosine)  # noqa: E731
    t64 = np.asarray(ts, np.float64)
    g_euler, g_ddim = np.eye(3), np.eye(3)
    for t, s in zip(t64[:-1], t64[1:], strict=True):
        g_euler = (np.eye(3) + (s - t) * a) @ g_euler
        al_t, be_t, al_s, be_s = (float(f(x)) for x in (t, s) for f in (cosine.alpha, cosine.beta))
        g_ddim = ((al_s / al_t) * np.eye(3) + (be_s - al_s * be_t / al_t) * a) @ g_ddim
    for step, g in ((euler, g_euler), (ddim, g_ddim)):
        u_k, log_p = jax.jit(jax.vmap(lambda u, step=step: sampler_log_prob(step, u, ts)))(u0)
        np.testing.assert_allclose(u_k, np.asarray(u0) @ g.T, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(log_p, _gaussian_log_prob(u_k, g), rtol=1e-4, atol=1e-3)


def test_the_discrete_route_above_the_exact_size_is_the_first_order_trace():
    """Above ``EXACT_MAX_DIM`` each step's log|det(I + dt D)| becomes Hutchinson's tr(dt D), exact for
    a diagonal D: log p = log N(u0) - sum_k dt tr D, within the first-order gap of the Euler steps."""
    dim = EXACT_MAX_DIM + 8
    d = jax.random.uniform(jax.random.PRNGKey(12), (dim,), minval=-1, maxval=1)
    u0 = jax.random.normal(jax.random.PRNGKey(13), (dim,))
    step = lambda x, t, t_next: schedules.euler_step(lambda y, _: d * y, x, t, t_next)  # noqa: E731
    _, log_p = jax.jit(lambda u: sampler_log_prob(step, u, TS))(u0)
    np.testing.assert_allclose(log_p, standard_normal_log_prob(u0) - jnp.sum(d), rtol=1e-5, atol=1e-3)
