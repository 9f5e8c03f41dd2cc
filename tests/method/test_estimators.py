"""The posterior-mean estimator against closed forms, explicit formulas and quadrature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian import gaussian_log_prob, posterior, random_cov

from rfm_jax.method import schedules
from rfm_jax.method.estimators import (
    Source,
    log_one_minus_tanh_sq,
    noise_score,
    posterior_mean,
    tanh_boltzmann_log_prob,
)

MODES = ["none", 0.0, 1.0, 0.5, "optimal_isotropic", "optimal"]
DIM = 3


def _problem(seed=0, diagonal=False, dim=DIM):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=dim).astype(np.float32)
    cov = random_cov(rng, dim, diagonal)
    x_t = rng.normal(size=dim).astype(np.float32)
    return jnp.asarray(mean), jnp.asarray(cov), jnp.asarray(x_t)


def _estimates(keys, log_prob_fn, x_t, t, **kwargs):
    """posterior_mean for each key, jit(vmap)-ed; x_t and t are traced so loops reuse the compile."""
    return _batched(log_prob_fn, **kwargs)(keys, x_t, jnp.float32(t))


_CACHE = {}


def _batched(log_prob_fn, **kwargs):
    cache_key = (id(log_prob_fn), tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if cache_key not in _CACHE:
        fn = lambda key, x_t, t: posterior_mean(key, log_prob_fn, x_t, t, **kwargs)  # noqa: E731
        _CACHE[cache_key] = (log_prob_fn, jax.jit(jax.vmap(fn, in_axes=(0, None, None))))
    return _CACHE[cache_key][1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("schedule", [schedules.linear(), schedules.cosine()], ids=["linear", "cosine"])
def test_every_mode_converges_to_closed_form(mode, schedule):
    """Unbiased in the limit (mean error within 5 standard errors over 64 repeats) and the RMSE
    shrinks like 1/sqrt(N): 16x the particles must at least halve it (expected: a quarter)."""
    mean, cov, x_t = _problem(seed=1)
    t, repeats = 0.5, 64
    mu0, mu1, _ = posterior(mean, cov, x_t, schedule.alpha(t), schedule.beta(t))
    keys = jax.random.split(jax.random.PRNGKey(0), repeats)
    rmse = {}
    for n in (256, 4096):
        est = _estimates(
            keys, gaussian_log_prob(mean, cov), x_t, t, schedule=schedule, num_particles=n, control_variate=mode
        )
        err = np.asarray(est.noise_mean, np.float64) - mu0
        stderr = err.std(axis=0, ddof=1) / np.sqrt(repeats)
        assert np.all(np.abs(err.mean(axis=0)) < 5 * stderr + 1e-5), (n, err.mean(axis=0), stderr)
        rmse[n] = np.sqrt(np.mean(err**2))
        np.testing.assert_allclose(est.data_mean.mean(0), mu1, atol=6 * rmse[n] * np.sqrt(1 / repeats) + 1e-2)
    assert rmse[4096] < 0.5 * rmse[256], rmse
    assert rmse[4096] < 0.05, rmse


@pytest.mark.parametrize("kind", ["linear", "cosine", "ve"])
@pytest.mark.parametrize("t", [0.2, 0.4, 0.6, 0.9])
def test_optimal_is_exact_on_diagonal_gaussian(kind, t):
    """For a diagonal Gaussian posterior, Lam* = posterior variance makes every particle's
    corrected value equal the mean: exact with 8 particles (ridge 0), any seed."""
    schedule = {"linear": schedules.linear(), "cosine": schedules.cosine(), "ve": schedules.ve(1e-3, 2.0)}[kind]
    mean, cov, x_t = _problem(seed=2, diagonal=True)
    mu0, mu1, cov0 = posterior(mean, cov, x_t, schedule.alpha(t), schedule.beta(t))
    keys = jax.random.split(jax.random.PRNGKey(3), 16)
    est = _estimates(
        keys,
        gaussian_log_prob(mean, cov),
        x_t,
        t,
        schedule=schedule,
        num_particles=8,
        control_variate="optimal",
        ridge=0.0,
    )
    np.testing.assert_allclose(est.noise_mean, np.broadcast_to(mu0, (16, DIM)), atol=1e-4)
    np.testing.assert_allclose(est.data_mean, np.broadcast_to(mu1, (16, DIM)), atol=1e-4 / float(schedule.alpha(t)))
    np.testing.assert_allclose(est.coef, np.broadcast_to(np.diag(cov0), (16, DIM)), rtol=1e-3)


def test_fixed_eta_matches_explicit_formulas():
    """eta = 0: sum_i w_i x0^i.  eta = 1: -(beta / (alpha lam)) sum_i w_i grad Q(x1^i).
    Particles are source.sample(key, (N, A)) = jax.random.normal(key, (N, A))."""
    schedule, t, temperature, n = schedules.cosine(), jnp.float32(0.35), 0.3, 64
    w_q = jnp.array([[1.0, -0.5, 0.2], [0.3, 0.8, -0.1], [0.0, 0.4, 1.2]])
    q_fn = lambda a: -jnp.sum(jnp.tanh(jnp.dot(w_q, a, precision="highest")) ** 2) + jnp.sin(a[0])  # noqa: E731
    log_prob_fn = lambda a: q_fn(a) / temperature  # noqa: E731
    x_t, key = jnp.array([0.3, -0.7, 1.1]), jax.random.PRNGKey(7)
    alpha, beta = schedule.alpha(t), schedule.beta(t)

    x0 = np.asarray(jax.random.normal(key, (n, DIM)), np.float64)
    x1 = (np.asarray(x_t) - float(beta) * x0) / float(alpha)
    log_p1 = np.array([float(log_prob_fn(jnp.asarray(x, jnp.float32))) for x in x1])
    w = np.exp(log_p1 - log_p1.max())
    w /= w.sum()
    grad_q = np.stack([np.asarray(jax.grad(q_fn)(jnp.asarray(x, jnp.float32))) for x in x1])

    qne = posterior_mean(key, log_prob_fn, x_t, t, schedule=schedule, num_particles=n, control_variate=0.0)
    dqs = posterior_mean(key, log_prob_fn, x_t, t, schedule=schedule, num_particles=n, control_variate=1.0)
    none = posterior_mean(key, log_prob_fn, x_t, t, schedule=schedule, num_particles=n, control_variate="none")
    np.testing.assert_allclose(qne.noise_mean, w @ x0, atol=1e-5)
    np.testing.assert_allclose(none.noise_mean, w @ x0, atol=1e-5)
    expected_dqs = -(float(beta) / (float(alpha) * temperature)) * (w @ grad_q)
    np.testing.assert_allclose(dqs.noise_mean, expected_dqs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(qne.log_weights, np.log(w), atol=1e-4)
    np.testing.assert_allclose(qne.ess, 1.0 / np.sum(w**2), rtol=1e-4)


def test_stein_term_has_zero_mean_under_true_posterior():
    """E_q[s(x0)] = 0 for x0 drawn exactly from the Gaussian posterior q(x0 | x_t), and
    E_q[x0 + s(x0)] = mu0 (each checked within 5 standard errors); s itself is far from zero."""
    schedule, t = schedules.linear(), 0.3
    mean, cov, x_t = _problem(seed=4)
    mu0, _, cov0 = posterior(mean, cov, x_t, schedule.alpha(t), schedule.beta(t))
    n = 200_000
    z = np.random.default_rng(5).normal(size=(n, DIM))
    x0 = jnp.asarray(mu0 + z @ np.linalg.cholesky(cov0).T, jnp.float32)
    score = lambda x: noise_score(gaussian_log_prob(mean, cov), x, x_t, jnp.float32(t), schedule=schedule)[1]  # noqa: E731
    s = np.asarray(jax.jit(jax.vmap(score))(x0), np.float64)
    stderr = s.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(s.mean(axis=0)) < 5 * stderr), (s.mean(0), stderr)
    assert np.all(s.std(axis=0) > 0.5)


def _mixture_log_prob(means, std, weights):
    def log_prob(x):
        sq = jnp.sum((x - means) ** 2, axis=-1) / std**2
        return jax.nn.logsumexp(-0.5 * sq + jnp.log(weights))

    return log_prob


def _quadrature_noise_mean(log_prob_fn, x_t, alpha, beta, half_width=7.0, size=401):
    """E[X0 | x_t] by a 2-D grid over x0 with weights N(x0; 0, I) p1((x_t - beta x0) / alpha)."""
    grid = np.linspace(-half_width, half_width, size)
    x0 = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    x1 = (np.asarray(x_t) - beta * x0) / alpha
    log_w = -0.5 * np.sum(x0**2, -1) + np.asarray(jax.vmap(log_prob_fn)(jnp.asarray(x1, jnp.float32)), np.float64)
    w = np.exp(log_w - log_w.max())
    return (w[:, None] * x0).sum(0) / w.sum()


def test_optimal_modes_beat_both_endpoints_on_mixture():
    """Non-Gaussian target: over many repeats the optimal coefficients have lower MSE than both
    eta = 0 (QNE) and eta = 1 (DQS) against a quadrature ground truth."""
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    means = jnp.asarray(np.stack([2.0 * np.cos(angles), 2.0 * np.sin(angles)], -1), jnp.float32)
    log_prob_fn = _mixture_log_prob(means, 0.6, jnp.asarray([0.3, 0.1, 0.2, 0.1, 0.2, 0.1]))
    schedule, repeats, n = schedules.linear(), 512, 16
    keys = jax.random.split(jax.random.PRNGKey(11), repeats)
    mse = {str(m): 0.0 for m in (0.0, 1.0, "optimal_isotropic", "optimal")}
    for t, x_t in [(0.3, (0.5, 0.2)), (0.5, (1.0, -0.6)), (0.7, (-1.2, 0.9)), (0.85, (1.5, 1.0))]:
        x_t = jnp.asarray(x_t, jnp.float32)
        truth = _quadrature_noise_mean(log_prob_fn, x_t, float(schedule.alpha(t)), float(schedule.beta(t)))
        for mode in mse:
            cv = float(mode) if mode[0].isdigit() else mode
            est = _estimates(keys, log_prob_fn, x_t, t, schedule=schedule, num_particles=n, control_variate=cv)
            mse[mode] += float(np.mean(np.sum((np.asarray(est.noise_mean) - truth) ** 2, -1)))
    # A margin of 20% is far outside the Monte Carlo error of 512 repeats (about 10% relative at 2 sigma).
    for optimal in ("optimal", "optimal_isotropic"):
        assert mse[optimal] < 0.8 * mse["0.0"], mse
        assert mse[optimal] < 0.8 * mse["1.0"], mse


def test_quadrature_reference_is_converged():
    """The grid used as ground truth above agrees with a finer, wider one."""
    means = jnp.asarray([[2.0, 0.0], [-1.0, 1.5]], jnp.float32)
    log_prob_fn = _mixture_log_prob(means, 0.6, jnp.asarray([0.7, 0.3]))
    x_t = jnp.asarray([0.4, 0.3])
    coarse = _quadrature_noise_mean(log_prob_fn, x_t, 0.3, 0.7)
    fine = _quadrature_noise_mean(log_prob_fn, x_t, 0.3, 0.7, half_width=9.0, size=801)
    np.testing.assert_allclose(coarse, fine, atol=1e-5)


@pytest.mark.parametrize("mode", ["optimal", "optimal_isotropic"])
@pytest.mark.parametrize("t", [0.3, 0.8])
def test_noise_and_data_space_coefficients_agree(mode, t):
    """C alpha^2 / beta^2 = Lam and the estimates coincide (ridge 0, no clip)."""
    schedule = schedules.cosine()
    mean, cov, x_t = _problem(seed=6)
    key, log_prob_fn = jax.random.PRNGKey(2), gaussian_log_prob(mean, cov)
    kwargs = dict(schedule=schedule, num_particles=32, control_variate=mode, ridge=0.0)
    noise = posterior_mean(key, log_prob_fn, x_t, jnp.float32(t), coef_space="noise", **kwargs)
    data = posterior_mean(key, log_prob_fn, x_t, jnp.float32(t), coef_space="data", **kwargs)
    ratio = float((schedule.alpha(t) / schedule.beta(t)) ** 2)
    np.testing.assert_allclose(data.coef * ratio, noise.coef, rtol=1e-4)
    np.testing.assert_allclose(data.noise_mean, noise.noise_mean, atol=1e-5)
    np.testing.assert_allclose(data.data_mean, noise.data_mean, atol=1e-5)


def _reference_optimal_coef(key, log_prob_fn, x_t, t, schedule, n, ridge, space, isotropic):
    """The plug-in coefficient written directly from docs/method.md section 4, in float64 NumPy:
    C = -sum_i w_i^2 (f_i - f_bar)(g_i - g_bar) / (sum_i w_i^2 (g_i - g_bar)^2 + ridge), with
    (f, g) = (x0, s0) in noise space and (x1, s1 = -(alpha/beta) s0) in data space."""
    alpha, beta = float(schedule.alpha(t)), float(schedule.beta(t))
    x0 = np.asarray(jax.random.normal(key, (n, x_t.shape[0])), np.float64)
    log_p1, s0 = jax.vmap(lambda x: noise_score(log_prob_fn, x, x_t, jnp.float32(t), schedule=schedule))(
        jnp.asarray(x0, jnp.float32)
    )
    log_p1, s0 = np.asarray(log_p1, np.float64), np.asarray(s0, np.float64)
    w = np.exp(log_p1 - log_p1.max())
    w /= w.sum()
    f, g = (x0, s0) if space == "noise" else ((np.asarray(x_t) - beta * x0) / alpha, -(alpha / beta) * s0)
    df, dg = f - w @ f, g - w @ g
    num, den = (w**2) @ (df * dg), (w**2) @ (dg * dg)
    if isotropic:
        num, den = num.sum(), den.sum()
    return np.broadcast_to(-num / (den + ridge), (x_t.shape[0],))


@pytest.mark.parametrize("space", ["noise", "data"])
@pytest.mark.parametrize("mode", ["optimal", "optimal_isotropic"])
def test_optimal_coefficient_matches_reference_formula_with_ridge(space, mode):
    """A ridge large enough to matter (1e-2 against sums of w^2 terms of order 1e-2) gives the
    coefficient of the direct formula, in both spaces."""
    mean, cov, x_t = _problem(seed=12)
    schedule, t, key, log_prob_fn = schedules.cosine(), 0.6, jax.random.PRNGKey(5), gaussian_log_prob(mean, cov)
    for ridge in (0.0, 1e-2, 1.0):
        est = posterior_mean(
            key,
            log_prob_fn,
            x_t,
            jnp.float32(t),
            schedule=schedule,
            num_particles=32,
            control_variate=mode,
            ridge=ridge,
            coef_space=space,
        )
        want = _reference_optimal_coef(
            key, log_prob_fn, x_t, t, schedule, 32, ridge, space, mode == "optimal_isotropic"
        )
        np.testing.assert_allclose(est.coef, want, rtol=2e-3, atol=1e-6)
    assert not np.allclose(
        want, _reference_optimal_coef(key, log_prob_fn, x_t, t, schedule, 32, 0.0, space, mode == "optimal_isotropic")
    )


@pytest.mark.parametrize("space", ["noise", "data"])
def test_clip_binds_in_its_space(space):
    """With clip below the fitted coefficient the result is the fixed coefficient +-clip."""
    mean, cov, x_t = _problem(seed=6, diagonal=True)
    schedule, t, key, log_prob_fn = (
        schedules.linear(),
        jnp.float32(0.5),
        jax.random.PRNGKey(0),
        gaussian_log_prob(mean, cov),
    )
    kwargs = dict(schedule=schedule, num_particles=64, coef_space=space)
    free = posterior_mean(key, log_prob_fn, x_t, t, **kwargs)
    bound = 0.5 * float(np.abs(free.coef).min())
    clipped = posterior_mean(key, log_prob_fn, x_t, t, clip=bound, **kwargs)
    np.testing.assert_allclose(clipped.coef, np.sign(free.coef) * bound, rtol=1e-6)
    ratio = 1.0 if space == "noise" else float((schedule.alpha(t) / schedule.beta(t)) ** 2)
    fixed = posterior_mean(
        key,
        log_prob_fn,
        x_t,
        t,
        schedule=schedule,
        num_particles=64,
        control_variate=bound * ratio * float(np.sign(free.coef[0])),
    )
    assert np.all(np.sign(free.coef) == np.sign(free.coef[0]))
    np.testing.assert_allclose(clipped.noise_mean, fixed.noise_mean, rtol=1e-5, atol=1e-6)


def test_tanh_latent_target_gives_boltzmann_action_density():
    """Mass of an action interval [a, b] under the latent density (on a u-grid) equals the mass of
    exp(Q(a)/lam) on an a-grid; dropping the Jacobian term breaks it."""
    q_fn = lambda a: jnp.sum(-4.0 * (a - 0.6) ** 2 + 0.5 * jnp.sin(6 * a))  # noqa: E731
    temperature = 0.5
    log_prob_u = tanh_boltzmann_log_prob(q_fn, temperature)
    u = np.linspace(-12, 12, 400_001)
    p_u = np.exp(np.asarray(jax.vmap(lambda x: log_prob_u(x[None]))(jnp.asarray(u, jnp.float32)), np.float64))
    a = np.linspace(-1, 1, 400_001)
    p_a = np.exp(np.asarray(jax.vmap(lambda x: q_fn(x[None]))(jnp.asarray(a, jnp.float32)), np.float64) / temperature)
    q_of_tanh = jax.vmap(lambda x: q_fn(jnp.tanh(x[None])))(jnp.asarray(u, jnp.float32))
    no_jacobian = np.exp(np.asarray(q_of_tanh, np.float64) / temperature)
    for lo, hi in [(-0.5, 0.2), (0.4, 0.8), (0.9, 0.99)]:
        in_u = (np.tanh(u) >= lo) & (np.tanh(u) <= hi)
        in_a = (a >= lo) & (a <= hi)
        mass_u, mass_a = p_u[in_u].sum() / p_u.sum(), p_a[in_a].sum() / p_a.sum()
        np.testing.assert_allclose(mass_u, mass_a, rtol=2e-3)
        assert abs(no_jacobian[in_u].sum() / no_jacobian.sum() - mass_a) > 0.01
    # The Jacobian term and its gradient (-2 tanh u) are stable far into the tails.
    u_far = jnp.array([-30.0, -3.0, 0.0, 3.0, 30.0])
    np.testing.assert_allclose(log_one_minus_tanh_sq(u_far), np.log(np.cosh(np.float64(u_far)) ** -2), rtol=1e-5)
    grad = jax.vmap(jax.grad(lambda x: log_one_minus_tanh_sq(x)))(u_far)
    np.testing.assert_allclose(grad, -2 * np.tanh(np.asarray(u_far)), atol=1e-6)


@pytest.mark.parametrize("mode", ["none", 1.0, "optimal"])
def test_jit_and_vmap_agree_with_single_calls(mode):
    mean, cov, _ = _problem(seed=8)
    log_prob_fn, schedule = gaussian_log_prob(mean, cov), schedules.linear()
    x_t = jax.random.normal(jax.random.PRNGKey(0), (5, DIM))
    t = jnp.linspace(0.1, 0.9, 5)
    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    fn = lambda k, x, s: posterior_mean(k, log_prob_fn, x, s, schedule=schedule, num_particles=16, control_variate=mode)  # noqa: E731
    batched = jax.jit(jax.vmap(fn))(keys, x_t, t)
    for i in range(5):
        single = fn(keys[i], x_t[i], t[i])
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            # jit fuses and may round differently from op-by-op execution: float32 tolerances.
            np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-5)
    chunked = jax.vmap(
        lambda k, x, s: posterior_mean(
            k, log_prob_fn, x, s, schedule=schedule, num_particles=16, control_variate=mode, particle_batch=4
        )
    )(keys, x_t, t)
    np.testing.assert_allclose(chunked.noise_mean, batched.noise_mean, rtol=1e-4, atol=1e-5)


def test_eta_and_ridge_are_sweepable_under_vmap():
    """A traced eta / ridge (pytree leaves) gives the same as the Python-float calls."""
    mean, cov, x_t = _problem(seed=9)
    log_prob_fn, schedule, key, t = gaussian_log_prob(mean, cov), schedules.linear(), jax.random.PRNGKey(0), 0.4
    etas = jnp.array([0.0, 0.5, 1.0])
    swept = jax.jit(
        jax.vmap(
            lambda eta: (
                posterior_mean(
                    key, log_prob_fn, x_t, jnp.float32(t), schedule=schedule, num_particles=32, control_variate=eta
                ).noise_mean
            )
        )
    )(etas)
    for i, eta in enumerate([0.0, 0.5, 1.0]):
        single = posterior_mean(
            key, log_prob_fn, x_t, jnp.float32(t), schedule=schedule, num_particles=32, control_variate=eta
        )
        np.testing.assert_allclose(swept[i], single.noise_mean, rtol=1e-4, atol=1e-5)
    ridges = jnp.array([0.0, 1e-4, 1.0])
    coef = jax.vmap(
        lambda r: (
            posterior_mean(key, log_prob_fn, x_t, jnp.float32(t), schedule=schedule, num_particles=32, ridge=r).coef
        )
    )(ridges)
    assert np.all(np.abs(coef[2]) < np.abs(coef[0]))


def test_custom_source_is_used():
    """A N(0, sigma^2 I) source with its own sampler and score still converges to the closed form
    of that source: mu0 = beta sigma^2 M^{-1}(x_t - alpha m) with M = alpha^2 S + beta^2 sigma^2 I."""
    sigma = 0.5
    source = Source(sample=lambda key, shape: sigma * jax.random.normal(key, shape), score=lambda x0: -x0 / sigma**2)
    mean, cov, x_t = _problem(seed=10, diagonal=True)
    schedule, t = schedules.linear(), 0.5
    alpha, beta = float(schedule.alpha(t)), float(schedule.beta(t))
    marginal = alpha**2 * np.asarray(cov, np.float64) + beta**2 * sigma**2 * np.eye(DIM)
    mu0 = beta * sigma**2 * np.linalg.solve(marginal, np.asarray(x_t - alpha * mean, np.float64))
    est = posterior_mean(
        jax.random.PRNGKey(0),
        gaussian_log_prob(mean, cov),
        x_t,
        jnp.float32(t),
        schedule=schedule,
        num_particles=8,
        ridge=0.0,
        source=source,
    )
    np.testing.assert_allclose(est.noise_mean, mu0, atol=1e-4)


def test_bad_inputs_raise_messages_naming_the_argument():
    log_prob_fn, schedule, key = (lambda x: -jnp.sum(x**2)), schedules.linear(), jax.random.PRNGKey(0)
    kwargs = dict(schedule=schedule, num_particles=8)
    with pytest.raises(ValueError, match="`x_t`.*shape \\[A\\].*got shape \\(4, 3\\)"):
        posterior_mean(key, log_prob_fn, jnp.zeros((4, 3)), 0.5, **kwargs)
    with pytest.raises(ValueError, match="`t`"):
        posterior_mean(key, log_prob_fn, jnp.zeros(3), jnp.ones(3), **kwargs)
    with pytest.raises(ValueError, match="`control_variate`.*'optimal'"):
        posterior_mean(key, log_prob_fn, jnp.zeros(3), 0.5, control_variate="best", **kwargs)
    with pytest.raises(ValueError, match="`num_particles`"):
        posterior_mean(key, log_prob_fn, jnp.zeros(3), 0.5, schedule=schedule, num_particles=1)
    with pytest.raises(ValueError, match="`log_prob_fn`"):
        posterior_mean(key, lambda x: x**2, jnp.zeros(3), 0.5, **kwargs)
    with pytest.raises(ValueError, match="`control_variate`"):
        posterior_mean(key, log_prob_fn, jnp.zeros(3), 0.5, control_variate=True, **kwargs)
    with pytest.raises(ValueError, match="`coef_space`"):
        posterior_mean(key, log_prob_fn, jnp.zeros(3), 0.5, coef_space="latent", **kwargs)
