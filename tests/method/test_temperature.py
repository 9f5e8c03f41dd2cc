"""The ESS temperature controller (``rfm_jax.method.temperature``): the ESS fraction against its
closed forms, and the dual-ascent step holding its target on fixed Q values, where the lambda
that holds it is found by bisection; under jit, and vmapped over a sweep of targets."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax.method.temperature import DEFAULT_ESS_TARGET, ess_fraction, ess_temperature_step

BOUNDS = (math.log(1e-4), math.log(1e4))


def test_ess_fraction_of_two_particles_and_its_limits():
    q = jnp.array([0.0, 0.3])
    for lam in (0.05, 0.2, 1.0):
        w = 1.0 / (1.0 + math.exp(-0.3 / lam))
        np.testing.assert_allclose(ess_fraction(q, lam), 1.0 / (2 * (w**2 + (1 - w) ** 2)), rtol=1e-6)
    q = jax.random.normal(jax.random.PRNGKey(0), (16,))
    np.testing.assert_allclose(ess_fraction(q, 1e4), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ess_fraction(q, 1e-4), 1.0 / 16, rtol=1e-6)


def test_gaussian_q_at_lambda_equal_to_its_std_gives_the_default_target():
    """q ~ N(0, sigma^2): f -> exp(-sigma^2 / lambda^2), so lambda = sigma gives exp(-1) (the
    default).  200k particles: the estimate's spread over 8 keys is about 0.003 (measured), so
    0.01 is about three times it."""
    sigma = 3.7
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    f = jax.vmap(lambda k: ess_fraction(sigma * jax.random.normal(k, (200_000,)), sigma))(keys)
    np.testing.assert_allclose(np.mean(f), DEFAULT_ESS_TARGET, atol=0.01)


def _bisect(q, target):
    """log lambda with mean_s f_s(lambda) = target (f rises with lambda)."""
    mean_f = jax.jit(lambda log_lam: jnp.mean(jax.vmap(ess_fraction, (0, None))(q, jnp.exp(log_lam))))
    lo, hi = BOUNDS
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_f(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def _run(q, target, log_lam0, steps=400, lr=1.0):
    def body(log_lam, _):
        log_lam, fraction = ess_temperature_step(log_lam, q, target, lr, BOUNDS)
        return log_lam, fraction

    return jax.lax.scan(body, jnp.float32(log_lam0), None, length=steps)


def test_the_update_holds_its_target_on_fixed_q_values():
    """64 states x 16 particles with Q scales from 0.1 to 100: from lambda = 1e-3 and from 1e3 the
    update reaches the bisected lambda* and holds f at the target; a sweep of three targets is one
    vmapped program."""
    key_q, key_scale = jax.random.split(jax.random.PRNGKey(2))
    scale = jnp.exp(jax.random.uniform(key_scale, (64, 1), minval=math.log(0.1), maxval=math.log(100.0)))
    q = scale * jax.random.normal(key_q, (64, 16))
    targets = jnp.array([0.2, DEFAULT_ESS_TARGET, 0.6])
    for start in (math.log(1e-3), math.log(1e3)):
        final, fractions = jax.jit(jax.vmap(lambda t, s=start: _run(q, t, s)))(targets)
        for i, target in enumerate(np.asarray(targets)):
            assert abs(float(final[i]) - _bisect(q, float(target))) < 0.02, (start, target)
            np.testing.assert_allclose(fractions[i, -50:], target, atol=1e-3)


def test_bounds_keep_lambda_finite_and_a_nan_q_reaches_the_guard():
    q = jax.random.normal(jax.random.PRNGKey(3), (8, 16))
    final, _ = _run(q, 1.5, 0.0, steps=200, lr=5.0)  # above f's maximum 1: only the upper bound stops it
    np.testing.assert_allclose(final, BOUNDS[1], rtol=1e-6)
    final, _ = _run(q, 1e-6, 0.0, steps=200, lr=5.0)  # below f's minimum 1 / P
    np.testing.assert_allclose(final, BOUNDS[0], rtol=1e-6)
    bad, _ = ess_temperature_step(jnp.float32(0.0), q.at[0, 0].set(jnp.nan), 0.5, 1.0, BOUNDS)
    assert np.isnan(bad)
