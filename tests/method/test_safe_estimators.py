"""The safeguarded control-variate modes ("safe_isotropic", "crossfit_isotropic") of posterior_mean
against closed forms and a direct float64 NumPy transcription of rfm_jax/method/safe_cv.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian import gaussian_log_prob, posterior, random_cov

from rfm_jax.method import schedules
from rfm_jax.method.estimators import noise_score, posterior_mean
from rfm_jax.method.safe_cv import TRUST

SAFE_MODES = ["safe_isotropic", "crossfit_isotropic"]
SPACES = [("noise", None), ("data", 2.0)]  # (coef_space, clip): the library default and the recommended one
DIM = 3


def _problem(seed=0, diagonal=False):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=DIM).astype(np.float32)
    cov = random_cov(rng, DIM, diagonal)
    return jnp.asarray(mean), jnp.asarray(cov), jnp.asarray(rng.normal(size=DIM).astype(np.float32))


def _batched(log_prob_fn, **kwargs):
    """jit(vmap over keys) of posterior_mean, x_t and t traced."""
    fn = lambda key, x_t, t: posterior_mean(key, log_prob_fn, x_t, t, **kwargs)  # noqa: E731
    return jax.jit(jax.vmap(fn, in_axes=(0, None, None)))


@pytest.mark.parametrize("space,clip", SPACES)
@pytest.mark.parametrize("mode", SAFE_MODES)
def test_safe_modes_converge_to_closed_form(mode, space, clip):
    """Consistent on a Gaussian target (mu0 = beta (alpha^2 S + beta^2 I)^{-1} (x_t - alpha m)): mean
    error within 5 standard errors of 64 repeats at N = 256 and 4096, RMSE at least halved by 16x N;
    at 4096 particles (ESS in the hundreds, the shrink factor ~1) at most half plain SNIS's RMSE."""
    schedule, t, repeats = schedules.cosine(), 0.5, 64
    mean, cov, x_t = _problem(seed=1)
    mu0, _, _ = posterior(mean, cov, x_t, schedule.alpha(t), schedule.beta(t))
    keys = jax.random.split(jax.random.PRNGKey(0), repeats)
    rmse = {}
    for n in (256, 4096):
        for cv in (mode, "none"):
            kwargs = dict(schedule=schedule, num_particles=n, control_variate=cv, coef_space=space, clip=clip)
            est = _batched(gaussian_log_prob(mean, cov), **kwargs)(keys, x_t, jnp.float32(t))
            err = np.asarray(est.noise_mean, np.float64) - mu0
            stderr = err.std(axis=0, ddof=1) / np.sqrt(repeats)
            assert np.all(np.abs(err.mean(axis=0)) < 5 * stderr + 1e-5), (n, cv, err.mean(axis=0), stderr)
            rmse[n, cv] = np.sqrt(np.mean(err**2))
    assert rmse[4096, mode] < 0.5 * rmse[256, mode], rmse
    assert rmse[4096, mode] < 0.5 * rmse[4096, "none"], rmse


def _guard(coef, scale, clip):
    if clip is not None:
        coef = np.clip(coef, -clip, clip)
    return np.clip(coef * scale, 0.0, 1.0) / scale


def _reference(key, log_prob_fn, x_t, t, schedule, n, ridge, space, clip, crossfit):
    """safe_cv written directly in float64 NumPy: (noise mean [A], coef [A], |correction| [])."""
    alpha, beta = float(schedule.alpha(t)), float(schedule.beta(t))
    x0 = jax.random.normal(key, (n, x_t.shape[0]))
    log_p1, s0 = jax.vmap(lambda x: noise_score(log_prob_fn, x, x_t, jnp.float32(t), schedule=schedule))(x0)
    x0, log_p1, s0 = (np.asarray(v, np.float64) for v in (x0, log_p1, s0))
    w = np.exp(log_p1 - log_p1.max())
    w /= w.sum()
    scale = 1.0 if space == "noise" else (alpha / beta) ** 2
    halves = [np.arange(n) % 2 == 0, np.arange(n) % 2 == 1] if crossfit else [np.ones(n, bool)]
    coefs = []
    for mask in halves:
        v = w[mask] / w[mask].sum()
        dx, ds = x0[mask] - v @ x0[mask], s0[mask] - v @ s0[mask]
        coef = -np.sum(v**2 @ (dx * ds)) / (scale * np.sum(v**2 @ (ds * ds)) + ridge)
        coefs.append(_guard(coef, scale, clip))
    targets = halves[::-1] if crossfit else halves
    correction = sum(scale * c * (w * m) @ s0 for c, m in zip(coefs, targets, strict=True))
    coef = sum(c * w[m].sum() for c, m in zip(coefs, targets, strict=True))
    se = np.sqrt(np.sum(w**2 @ (x0 - w @ x0) ** 2))
    factor = min(1.0, TRUST * se / np.linalg.norm(correction))
    return w @ x0 + factor * correction, np.full(x_t.shape[0], factor * coef), factor * np.linalg.norm(correction)


@pytest.mark.parametrize("space,clip", [*SPACES, ("data", 1e-3), ("noise", 0.05)])
@pytest.mark.parametrize("mode", SAFE_MODES)
def test_matches_direct_formula(mode, space, clip):
    """Estimate and reported coefficient equal the formula of safe_cv's docstring (clip, the noise-space
    bound [0, 1], the trust region |d| <= TRUST se), at several t, including clips that bind."""
    mean, cov, x_t = _problem(seed=12)
    log_prob_fn, schedule, key = gaussian_log_prob(mean, cov), schedules.cosine(), jax.random.PRNGKey(5)
    n, ridge, crossfit = 32, 1e-3, mode == "crossfit_isotropic"
    for t in (0.2, 0.6, 0.9):
        est = posterior_mean(key, log_prob_fn, x_t, jnp.float32(t), schedule=schedule, num_particles=n,
                             control_variate=mode, ridge=ridge, coef_space=space, clip=clip)
        want_mean, want_coef, step = _reference(key, log_prob_fn, x_t, t, schedule, n, ridge, space, clip, crossfit)
        np.testing.assert_allclose(est.coef, want_coef, rtol=2e-3, atol=1e-6)
        # float32 against float64: the correction (a coefficient times a large score sum) to the coef's rtol
        np.testing.assert_allclose(est.noise_mean, want_mean, atol=2e-3 * step + 1e-5)


@pytest.mark.parametrize("mode", SAFE_MODES)
def test_correction_stays_within_trust_region(mode):
    """|safe - plain SNIS| <= TRUST * sqrt(sum_i w_i^2 |x0_i - x_bar|^2) for every draw, and the bound
    binds for some draws at a low ESS (N = 8, t = 0.3)."""
    mean, cov, x_t = _problem(seed=4)
    schedule, t, n, keys = schedules.linear(), jnp.float32(0.3), 8, jax.random.split(jax.random.PRNGKey(7), 64)
    kwargs = dict(schedule=schedule, num_particles=n, coef_space="data", clip=2.0)
    safe = _batched(gaussian_log_prob(mean, cov), control_variate=mode, **kwargs)(keys, x_t, t)
    plain = _batched(gaussian_log_prob(mean, cov), control_variate="none", **kwargs)(keys, x_t, t)
    x0 = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (n, DIM)))(keys), np.float64)
    w = np.exp(np.asarray(safe.log_weights, np.float64))
    x_bar = np.einsum("rn,rna->ra", w, x0)
    se = np.sqrt(np.einsum("rn,rn->r", w**2, np.sum((x0 - x_bar[:, None]) ** 2, -1)))
    step = np.linalg.norm(np.asarray(safe.noise_mean - plain.noise_mean, np.float64), axis=-1)
    assert np.all(step <= TRUST * se * (1 + 1e-4) + 1e-6), (step, se)
    assert np.any(step >= TRUST * se * (1 - 1e-4)) and np.any(step > 1e-3)


@pytest.mark.parametrize("mode", SAFE_MODES)
def test_one_dominating_weight_gives_plain_snis(mode):
    """ESS = 1 (a target so narrow that one particle holds all the weight in float32): coefficient 0 and
    exactly the plain SNIS estimate, i.e. the heaviest particle."""
    schedule, t = schedules.linear(), jnp.float32(0.5)
    alpha, beta = schedule.alpha(t), schedule.beta(t)
    particles = jax.random.normal(jax.random.PRNGKey(3), (16, DIM))
    x_t = jnp.asarray([0.3, -0.2, 0.1])
    centre = (x_t - beta * particles[5]) / alpha  # p1 peaks at particle 5's x1
    log_prob_fn = lambda x: -1e4 * jnp.sum((x - centre) ** 2)  # noqa: E731
    kwargs = dict(schedule=schedule, num_particles=16, particles=particles, coef_space="data", clip=2.0)
    safe = posterior_mean(None, log_prob_fn, x_t, t, control_variate=mode, **kwargs)
    plain = posterior_mean(None, log_prob_fn, x_t, t, control_variate="none", **kwargs)
    assert float(safe.ess) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(safe.coef, 0.0)
    np.testing.assert_allclose(safe.noise_mean, plain.noise_mean, atol=1e-6)
    np.testing.assert_allclose(safe.noise_mean, particles[5], atol=1e-5)


@pytest.mark.parametrize("mode", SAFE_MODES)
def test_jit_vmap_and_chunks_agree_with_single_calls(mode):
    mean, cov, _ = _problem(seed=8)
    log_prob_fn, schedule = gaussian_log_prob(mean, cov), schedules.linear()
    x_t = jax.random.normal(jax.random.PRNGKey(0), (5, DIM))
    t = jnp.linspace(0.1, 0.9, 5)
    keys = jax.random.split(jax.random.PRNGKey(1), 5)

    def fn(k, x, s, particle_batch=None):
        return posterior_mean(k, log_prob_fn, x, s, schedule=schedule, num_particles=16, control_variate=mode,
                              coef_space="data", clip=2.0, particle_batch=particle_batch)

    batched = jax.jit(jax.vmap(fn))(keys, x_t, t)
    chunked = jax.jit(jax.vmap(lambda k, x, s: fn(k, x, s, particle_batch=4)))(keys, x_t, t)
    for i in range(5):
        single = fn(keys[i], x_t[i], t[i])
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-5)  # jit may round differently
    for got, want in zip(jax.tree.leaves(chunked), jax.tree.leaves(batched), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.any(np.asarray(batched.coef) > 0)  # the control variate is active somewhere on this grid


def test_mode_names_and_particle_count():
    log_prob_fn, schedule, key = (lambda x: -jnp.sum(x**2)), schedules.linear(), jax.random.PRNGKey(0)
    for mode in SAFE_MODES:
        est = posterior_mean(key, log_prob_fn, jnp.zeros(2), 0.5, schedule=schedule, num_particles=2,
                             control_variate=mode)
        assert est.coef.shape == (2,) and np.all(np.isfinite(est.noise_mean))
        with pytest.raises(ValueError, match="`num_particles`"):
            posterior_mean(key, log_prob_fn, jnp.zeros(2), 0.5, schedule=schedule, num_particles=1,
                           control_variate=mode)
    with pytest.raises(ValueError, match="safe_isotropic"):
        posterior_mean(key, log_prob_fn, jnp.zeros(2), 0.5, schedule=schedule, num_particles=4, control_variate="safe")
