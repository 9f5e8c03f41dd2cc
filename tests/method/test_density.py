"""The flow policy's log-density by the divergence route (``rfm_jax.method.density``) against
closed forms: a linear flow, whose Euler pushforward of N(0, I) is a known Gaussian; Hutchinson's
estimate against the exact trace; the tanh correction; under jit and vmap."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax.method.density import EXACT_MAX_DIM, divergence, euler_log_prob, standard_normal_log_prob, tanh_log_prob

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
