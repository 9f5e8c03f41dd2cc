"""Schedules: endpoints, derivatives, conversions and samplers against exact Gaussian flows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian import posterior

from rfm_jax.method import schedules

ALL = {
    "linear": schedules.linear(),
    "cosine": schedules.cosine(),
    "vp": schedules.vp(0.1, 20.0),
    "ve": schedules.ve(1e-3, 5.0),
}


@pytest.mark.parametrize("name", list(ALL))
def test_derivatives_match_finite_differences(name):
    schedule, h = ALL[name], 1e-3
    for t in (0.1, 0.4, 0.7, 0.95):
        t64 = np.float64(t)
        for value, deriv in ((schedule.alpha, schedule.d_alpha), (schedule.beta, schedule.d_beta)):
            fd = (float(value(t64 + h)) - float(value(t64 - h))) / (2 * h)
            np.testing.assert_allclose(float(deriv(t)), fd, rtol=2e-3, atol=2e-3)


def test_endpoints():
    lin, cos, vp, ve = ALL["linear"], ALL["cosine"], ALL["vp"], ALL["ve"]
    for schedule in (lin, cos):
        np.testing.assert_allclose([schedule.alpha(0.0), schedule.beta(0.0)], [0.0, 1.0], atol=1e-6)
        np.testing.assert_allclose([schedule.alpha(1.0), schedule.beta(1.0)], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose([vp.alpha(1.0), vp.beta(1.0)], [1.0, 0.0], atol=1e-6)
    assert float(vp.alpha(0.0)) < 0.01  # exp(-(0.1 + 19.9 / 2) / 2)
    np.testing.assert_allclose(vp.alpha(0.3) ** 2 + vp.beta(0.3) ** 2, 1.0, rtol=1e-6)
    np.testing.assert_allclose([ve.alpha(0.5), ve.beta(0.0), ve.beta(1.0)], [1.0, 5.0, 1e-3], rtol=1e-5)


@pytest.mark.parametrize("name", list(ALL))
def test_conversions_round_trip(name):
    schedule, t = ALL[name], jnp.float32(0.37)
    x_t, mu0 = jnp.array([0.3, -1.2]), jnp.array([0.5, 0.8])
    mu1 = schedules.data_from_noise(schedule, x_t, t, mu0)
    np.testing.assert_allclose(schedule.alpha(t) * mu1 + schedule.beta(t) * mu0, x_t, atol=1e-5)
    np.testing.assert_allclose(schedules.noise_from_data(schedule, x_t, t, mu1), mu0, atol=1e-4)
    v = schedules.velocity_from_noise(schedule, x_t, t, mu0)
    np.testing.assert_allclose(v, schedules.velocity_from_means(schedule, t, mu0, mu1), atol=1e-4)
    np.testing.assert_allclose(schedules.noise_from_velocity(schedule, x_t, t, v), mu0, atol=1e-4)
    np.testing.assert_allclose(schedules.score_from_noise(schedule, t, mu0), -mu0 / schedule.beta(t), rtol=1e-6)


def test_linear_velocity_identities():
    schedule, t = ALL["linear"], jnp.float32(0.3)
    x_t, mu0 = jnp.array([0.3, -1.2]), jnp.array([0.5, 0.8])
    mu1 = schedules.data_from_noise(schedule, x_t, t, mu0)
    v = schedules.velocity_from_means(schedule, t, mu0, mu1)
    np.testing.assert_allclose(v, mu1 - mu0, atol=1e-5)
    np.testing.assert_allclose(v, (x_t - mu0) / t, atol=1e-5)
    np.testing.assert_allclose(v, (mu1 - x_t) / (1 - t), atol=1e-5)


# Data N(m, s^2) per dimension: the exact posterior means give the exact velocity and noise fields.
M, S = np.array([1.5, -0.5]), np.array([0.5, 2.0])


def _exact_noise_fn(schedule):
    def noise_fn(x, t):
        marginal = schedule.alpha(t) ** 2 * S**2 + schedule.beta(t) ** 2
        return schedule.beta(t) * (x - schedule.alpha(t) * M) / marginal

    return noise_fn


def _exact_velocity_fn(schedule):
    noise_fn = _exact_noise_fn(schedule)
    return lambda x, t: schedules.velocity_from_noise(schedule, x, t, noise_fn(x, t))


def _moments(samples):
    return np.asarray(samples.mean(0)), np.asarray(samples.std(0))


def test_gaussian_helper_matches_per_dimension_formula():
    schedule, t = ALL["cosine"], 0.4
    x = np.array([0.2, 0.9])
    mu0, _, _ = posterior(M, np.diag(S**2), x, schedule.alpha(t), schedule.beta(t))
    np.testing.assert_allclose(_exact_noise_fn(schedule)(jnp.asarray(x), t), mu0, rtol=1e-5)


def _exact_flow_map(schedule, x, t0, t1):
    """The probability-flow ODE of Gaussian data is affine: x1 = m_1 + (sd_1 / sd_0) (x - m_0)."""
    sd = lambda t: np.sqrt(schedule.alpha(t) ** 2 * S**2 + schedule.beta(t) ** 2)  # noqa: E731
    return schedule.alpha(t1) * M + sd(t1) / sd(t0) * (x - schedule.alpha(t0) * M)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ode_samplers_follow_exact_flow_map(name):
    """Euler and Heun with the exact velocity converge to the exact flow map (first and second order)."""
    schedule, t0, t1 = ALL[name], 0.05, 0.95
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 2)) * 2.0
    want = _exact_flow_map(schedule, np.asarray(x), t0, t1)
    errors, v = {}, _exact_velocity_fn(schedule)
    for method, sampler in (("euler", schedules.sample_euler), ("heun", schedules.sample_heun)):
        for steps in (10, 40):
            out = jax.vmap(lambda x0, f=sampler, n=steps: f(v, x0, num_steps=n, t_start=t0, t_end=t1))(x)
            errors[method, steps] = float(np.abs(np.asarray(out) - want).max())
    assert errors["euler", 40] < 0.5 * errors["euler", 10], errors  # first order: ~1/4
    assert errors["heun", 40] < 0.15 * errors["heun", 10], errors  # second order: ~1/16
    assert errors["heun", 10] < errors["euler", 10], errors
    assert errors["heun", 40] < 1e-2, errors


@pytest.mark.parametrize("name", ["cosine", "vp", "ve", "linear"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_noise_samplers_reach_data_distribution(name, stochastic):
    """DDIM (deterministic) and DDPM (ancestral) with the exact epsilon reach N(m, s^2) at t = 1."""
    schedule, n, t0 = ALL[name], 20_000, 0.02
    key_start, key_sample = jax.random.split(jax.random.PRNGKey(1))
    marginal_std = np.sqrt(schedule.alpha(t0) ** 2 * S**2 + schedule.beta(t0) ** 2)
    x_start = jax.random.normal(key_start, (n, 2)) * marginal_std + schedule.alpha(t0) * M
    noise_fn = _exact_noise_fn(schedule)
    kwargs = dict(schedule=schedule, num_steps=200, t_start=t0, t_end=1.0)
    if stochastic:
        keys = jax.random.split(key_sample, n)
        samples = jax.jit(jax.vmap(lambda k, x: schedules.sample_ddpm(k, noise_fn, x, **kwargs)))(keys, x_start)
    else:
        samples = jax.jit(jax.vmap(lambda x: schedules.sample_ddim(noise_fn, x, **kwargs)))(x_start)
    mean, std = _moments(samples)
    np.testing.assert_allclose(mean, M, atol=5 * S.max() / np.sqrt(n) + 0.02)
    np.testing.assert_allclose(std, S, rtol=0.05)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="beta_min"):
        schedules.vp(1.0, 0.5)
    with pytest.raises(ValueError, match="sigma_min"):
        schedules.ve(0.0, 1.0)
    with pytest.raises(ValueError, match="num_steps"):
        schedules.sample_euler(lambda x, t: x, jnp.zeros(2), num_steps=0)
    with pytest.raises(ValueError, match="kind"):
        schedules.Schedule("sigmoid").alpha(0.5)


def test_schedule_parameters_are_sweepable():
    """VP parameters are pytree leaves: one vmap evaluates several schedules."""
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), schedules.vp(0.1, 10.0), schedules.vp(0.1, 20.0))
    alphas = jax.vmap(lambda s: s.alpha(0.5))(stacked)
    np.testing.assert_allclose(alphas, [schedules.vp(0.1, 10.0).alpha(0.5), schedules.vp(0.1, 20.0).alpha(0.5)])


@pytest.mark.parametrize("name", ["cosine", "vp", "linear"])
def test_samplers_are_exact_for_point_mass_data(name):
    """Data = a point mass at m, so eps(x, t) = (x - alpha_t m) / beta_t exactly and the bridge is
    exact at any step size: after 2 coarse steps from t0 to t1 the DDPM output is N(alpha_1 m,
    beta_1^2 I) (checked to Monte Carlo error) and DDIM maps each point to alpha_1 m + beta_1 eps."""
    schedule, n, t0, t1 = ALL[name], 40_000, 0.05, 0.6
    m = jnp.array([1.0, -2.0])
    noise_fn = lambda x, t: (x - schedule.alpha(t) * m) / schedule.beta(t)  # noqa: E731
    key_start, key_sample = jax.random.split(jax.random.PRNGKey(2))
    eps = jax.random.normal(key_start, (n, 2))
    x_start = schedule.alpha(t0) * m + schedule.beta(t0) * eps
    kwargs = dict(schedule=schedule, num_steps=2, t_start=t0, t_end=t1)
    ddim = jax.vmap(lambda x: schedules.sample_ddim(noise_fn, x, **kwargs))(x_start)
    np.testing.assert_allclose(ddim, schedule.alpha(t1) * m + schedule.beta(t1) * eps, atol=2e-5)
    keys = jax.random.split(key_sample, n)
    ddpm = np.asarray(jax.vmap(lambda k, x: schedules.sample_ddpm(k, noise_fn, x, **kwargs))(keys, x_start))
    want_std = float(schedule.beta(t1))
    np.testing.assert_allclose(ddpm.mean(0), schedule.alpha(t1) * m, atol=5 * want_std / np.sqrt(n))
    np.testing.assert_allclose(ddpm.std(0), want_std, rtol=5 / np.sqrt(2 * n))


def test_derivatives_accept_arrays_and_traced_parameters():
    t = jnp.array([0.2, 0.5, 0.8])
    for schedule in ALL.values():
        np.testing.assert_allclose(schedule.d_alpha(t), [schedule.d_alpha(s) for s in (0.2, 0.5, 0.8)], rtol=1e-5)
        np.testing.assert_allclose(schedule.d_beta(t), [schedule.d_beta(s) for s in (0.2, 0.5, 0.8)], rtol=1e-5)
    # Constructors work on traced parameters (a jit or vmap over beta_max).
    alphas = jax.jit(jax.vmap(lambda b: schedules.vp(0.1, b).alpha(0.5)))(jnp.array([10.0, 20.0]))
    np.testing.assert_allclose(alphas, [schedules.vp(0.1, 10.0).alpha(0.5), schedules.vp(0.1, 20.0).alpha(0.5)])
