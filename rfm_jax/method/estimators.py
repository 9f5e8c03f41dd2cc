"""Posterior means E[X0 | x_t], E[X1 | x_t] by self-normalised importance sampling (SNIS) with
Langevin-Stein control variates (docs/method.md sections 3-5).

Given x_t = alpha x1 + beta x0 and particles x0^i ~ p0 (the proposal),

    x1^i = (x_t - beta x0^i) / alpha,      w = softmax_i(log p1(x1^i))        (p0 cancels)
    s^i  = grad log p0(x0^i) - (beta / alpha) grad log p1(x1^i)             (noise posterior score)
    mu0  = sum_i w_i (x0^i + Lam s^i) = x_bar + Lam s_bar,   mu1 = (x_t - beta mu0) / alpha

The Stein term Lam s has zero posterior mean for any constant Lam, so Lam only changes variance:

    "none"               Lam = 0 and no gradients are taken (plain SNIS, QNE / MaxEntDP)
    float eta            Lam = eta I in noise space (0: QNE, 1: DQS / iDEM gradient expectation)
    "optimal_isotropic"  one eta*, "optimal" a per-dimension Lam*, minimising the delta-method
                         variance sum_i w_i^2 (f_i - mu)^2:
        Lam*_j = -sum_i w_i^2 (x0_ij - x_bar_j)(s_ij - s_bar_j) / (sum_i w_i^2 (s_ij - s_bar_j)^2 + ridge)
                 (sums over j too for the isotropic version)
    "safe_isotropic"     the isotropic plug-in guarded for a low ESS (``rfm_jax.method.safe_cv``): clipped as
                         below, then 0 <= Lam <= 1 in noise space, the correction at most 2 SNIS standard errors;
                         with coef_space="data", clip=2 never measurably worse than plain SNIS in
                         experiments/estimator_variance.py. "crossfit_isotropic": the same guards, each
                         half's coefficient applied to the other half's particles.

In data space the score is s1 = -(alpha/beta) s0, so a data-space coefficient C equals the
noise-space Lam = C alpha^2 / beta^2: ``coef_space="data"`` fits and clips C instead (as the
reference code does, with clip 2); the ridge and the clip are the only differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rfm_jax.method import safe_cv
from rfm_jax.method.schedules import Schedule
from rfm_jax.method.validation import check_positive_int, check_rank

Array = jax.Array
_SAFE = {"safe_isotropic": False, "crossfit_isotropic": True}  # mode -> cross-fitted (rfm_jax.method.safe_cv)
_MODES = ("none", "optimal", "optimal_isotropic", *_SAFE)


class Source(NamedTuple):
    """The source p0, which is also the SNIS proposal.

    sample: ``(key, shape) -> x0`` of ``shape`` (shape = (num_particles, A)).
    score:  ``x0 [A] -> grad log p0(x0) [A]``.
    """

    sample: Callable[[Array, tuple[int, ...]], Array]
    score: Callable[[Array], Array]


def standard_normal(sample: Callable = jax.random.normal) -> Source:
    """p0 = N(0, I): x0 = ``sample(key, shape)`` (any standard normal draw, by default
    ``jax.random.normal``; the agents pass a faster one), score(x0) = -x0."""
    return Source(sample=sample, score=lambda x0: -x0)


class PosteriorEstimate(NamedTuple):
    """Output of ``posterior_mean`` for one noisy point (A = action dims, N = particles).

    noise_mean:  [A] estimate of E[X0 | x_t] (the epsilon target of a diffusion policy).
    data_mean:   [A] estimate of E[X1 | x_t] = (x_t - beta noise_mean) / alpha.
    ess:         []  effective sample size 1 / sum_i w_i^2 of the SNIS weights.
    coef:        [A] coefficient used: Lam in noise space, or C in data space when the optimal
                 modes run with ``coef_space="data"`` (zero for "none", eta for a float).
    log_weights: [N] normalised log SNIS weights.
    """

    noise_mean: Array
    data_mean: Array
    ess: Array
    coef: Array
    log_weights: Array


def noise_score(log_prob_fn: Callable, x0: Array, x_t: Array, t, *, schedule: Schedule, source: Source | None = None):
    """Score of the noise posterior q(x0 | x_t) ∝ p0(x0) p1(x1(x0)) at one particle.

    Returns ``(log_p1, s)``: log p1(x1(x0)) [] and s = grad log p0(x0) - (beta/alpha) grad log p1(x1) [A].
    """
    source = standard_normal() if source is None else source
    alpha, beta = schedule.alpha(t), schedule.beta(t)
    log_p1, grad_x1 = jax.value_and_grad(log_prob_fn)((x_t - beta * x0) / alpha)
    return log_p1, source.score(x0) - (beta / alpha) * grad_x1


def weighted_sum(w: Array, x: Array) -> Array:
    """sum_i w_i x_i: w [N], x [N, A] -> [A], in full float32 (``Precision.HIGHEST``: a GPU's
    default float32 dot may round its inputs to TF32, about 1e-3 relative).  N x A products only."""
    return jnp.dot(w, x, precision=jax.lax.Precision.HIGHEST)


def posterior_mean(
    key: Array,
    log_prob_fn: Callable[[Array], Array],
    x_t: Array,
    t,
    *,
    schedule: Schedule,
    num_particles: int,
    control_variate: str | float | Array = "optimal",
    ridge: float | Array = 1e-4,
    clip: float | Array | None = None,
    coef_space: str = "noise",
    source: Source | None = None,
    particle_batch: int | None = None,
    particles: Array | None = None,
) -> PosteriorEstimate:
    """Estimate E[X0 | x_t] and E[X1 | x_t] for one noisy point.

    Args:
      key: PRNG key; the particles are ``source.sample(key, (num_particles, A))``.
      log_prob_fn: unnormalised log target for one point, ``x1 [A] -> []``; gradients by autodiff.
      x_t: noisy point, shape [A].  t: scalar time, keep it in [t_min, 1 - t_min] (alpha, beta > 0).
      schedule: the probability path.  num_particles: static count N.
      control_variate: "none", a float eta (noise space), "optimal_isotropic", "optimal",
        "safe_isotropic" (recommended with ``coef_space="data", clip=2.0``) or "crossfit_isotropic".
      ridge: added to sum_i w_i^2 (s_i - s_bar)^2 in the fitted coefficient (optimal and safe modes).
      clip: bound on |coef| for the optimal and safe modes, or None; a fixed eta is used as given.
      coef_space: "noise" or "data", where the optimal coefficient is fitted, ridged and clipped.
        The reference agent uses ``coef_space="data", clip=2.0``; the defaults (noise space, no
        clip) are the plain estimator, which can extrapolate wildly when the ESS is small.
      source: p0 and proposal (default N(0, I)).
      particle_batch: evaluate the particles in chunks of this size with ``lax.map`` (saves
        memory, often faster on CPU); None evaluates them all in one ``vmap``.
      particles: [num_particles, A] draws of the source to use instead of drawing them from
        ``key`` (which may then be None): fixed or quasi-random particles, golden tests.

    When one weight is ~1 (ESS ~ 1, typical at small t) no coefficient can be fitted: the optimal
    modes then fall back to coef 0, i.e. plain SNIS. Watch ``ess``.
    """
    name = "posterior_mean"
    check_rank(name, "x_t", x_t, 1, "[A]")
    check_rank(name, "t", t, 0, "[] (a scalar)")
    if isinstance(control_variate, bool):
        raise ValueError(f"{name}: `control_variate` must be a mode name or a float eta, got {control_variate!r}.")
    is_mode = isinstance(control_variate, str)
    if is_mode and control_variate not in _MODES:
        raise ValueError(f"{name}: `control_variate` must be one of {_MODES} or a float eta, got {control_variate!r}.")
    if not is_mode:
        check_rank(name, "control_variate", control_variate, 0, "[] (a float eta)")
    optimal = is_mode and control_variate in ("optimal", "optimal_isotropic")
    safe = is_mode and control_variate in _SAFE
    check_positive_int(name, "num_particles", num_particles, 2 if optimal or safe else 1)
    if coef_space not in ("noise", "data"):
        raise ValueError(f"{name}: `coef_space` must be 'noise' or 'data', got {coef_space!r}.")
    if particle_batch is not None:
        check_positive_int(name, "particle_batch", particle_batch)
    source = standard_normal() if source is None else source
    if is_mode:
        needs_grad = control_variate != "none"
    else:  # a fixed eta: a literal 0 needs no gradients (QNE); a traced eta may be anything.
        needs_grad = not (isinstance(control_variate, (int, float)) and control_variate == 0)
    log_p1_shape = jax.eval_shape(log_prob_fn, x_t).shape
    if log_p1_shape != ():
        raise ValueError(f"{name}: `log_prob_fn` must map one point [A] to a scalar, got shape {log_p1_shape}.")

    dim = x_t.shape[0]
    alpha, beta = schedule.alpha(t), schedule.beta(t)
    if particles is None:
        x0 = source.sample(key, (num_particles, dim)).astype(x_t.dtype)
    else:
        if particles.shape != (num_particles, dim):
            raise ValueError(f"{name}: `particles` must have shape {(num_particles, dim)}, got {particles.shape}.")
        x0 = particles.astype(x_t.dtype)

    if needs_grad:
        per_particle = lambda x0_i: noise_score(log_prob_fn, x0_i, x_t, t, schedule=schedule, source=source)  # noqa: E731
    else:
        per_particle = lambda x0_i: (log_prob_fn((x_t - beta * x0_i) / alpha), jnp.zeros_like(x0_i))  # noqa: E731
    if particle_batch is None:
        log_p1, s0 = jax.vmap(per_particle)(x0)
    else:
        log_p1, s0 = jax.lax.map(per_particle, x0, batch_size=particle_batch)

    log_w = jax.nn.log_softmax(log_p1)
    w = jnp.exp(log_w)
    # Centre on the heaviest particle before averaging: when one weight is ~1, x0 - x_bar is then
    # formed from the small weights directly instead of by cancellation in float32. The mask makes
    # the heaviest row exactly 0 even where XLA recomputes x0 in two fusions with other rounding.
    top = jnp.argmax(log_w)
    not_top = (jnp.arange(num_particles) != top)[:, None]
    x_rel, s_rel = jnp.where(not_top, x0 - x0[top], 0.0), jnp.where(not_top, s0 - s0[top], 0.0)
    x_rel_bar, s_rel_bar = weighted_sum(w, x_rel), weighted_sum(w, s_rel)
    x_bar, s_bar = x0[top] + x_rel_bar, s0[top] + s_rel_bar

    # sum_i w_i^2 in log space; w^2 / sum w^2 keeps the small weights from underflowing.
    log_sum_w2 = jax.nn.logsumexp(2.0 * log_w)
    if optimal:
        w2 = jax.nn.softmax(2.0 * log_w)
        dx, ds = x_rel - x_rel_bar, s_rel - s_rel_bar
        cov, var = weighted_sum(w2, dx * ds), weighted_sum(w2, ds * ds)
        if control_variate == "optimal_isotropic":
            cov, var = jnp.sum(cov), jnp.sum(var)
        scale = 1.0 if coef_space == "noise" else (alpha / beta) ** 2
        # Same ratio as -sum w^2 dx ds / (sum w^2 ds^2 + ridge), with both sums divided by sum w^2.
        denominator = scale * var + ridge * jnp.exp(-log_sum_w2)
        coef = jnp.where(denominator > 0, -cov / jnp.where(denominator > 0, denominator, 1.0), 0.0)
        if clip is not None:
            coef = jnp.clip(coef, -clip, clip)
        coef = jnp.broadcast_to(coef, x_bar.shape)
        lam = coef * scale
    elif safe:
        scale = 1.0 if coef_space == "noise" else (alpha / beta) ** 2
        correction, coef = safe_cv.safe_correction(
            log_w, x0, s0, scale=scale, ridge=ridge, clip=clip, crossfit=_SAFE[control_variate]
        )
    elif is_mode:  # "none"
        coef = lam = jnp.zeros_like(x_bar)
    else:
        coef = lam = jnp.broadcast_to(jnp.asarray(control_variate, x_bar.dtype), x_bar.shape)

    noise_mean = x_bar + (correction if safe else lam * s_bar)
    return PosteriorEstimate(
        noise_mean=noise_mean,
        data_mean=(x_t - beta * noise_mean) / alpha,
        ess=jnp.exp(-log_sum_w2),
        coef=coef,
        log_weights=log_w,
    )


def boltzmann_log_prob(q_fn: Callable[[Array], Array], temperature) -> Callable[[Array], Array]:
    """log p1(a) = Q(a) / temperature for an unbounded action; ``q_fn(a [A]) -> []``."""
    return lambda a: q_fn(a) / temperature


def log_one_minus_tanh_sq(u: Array) -> Array:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.  [A] -> [A]."""
    return 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def tanh_boltzmann_log_prob(q_fn: Callable[[Array], Array], temperature) -> Callable[[Array], Array]:
    """Latent log target of a tanh-squashed Boltzmann policy (docs/method.md section 5):

        log p1(u) = Q(tanh u) / temperature + sum_j log(1 - tanh(u_j)^2)

    so that a = tanh(u) has density ∝ exp(Q(a) / temperature) on (-1, 1)^A.  ``q_fn(a [A]) -> []``.
    """
    return lambda u: q_fn(jnp.tanh(u)) / temperature + jnp.sum(log_one_minus_tanh_sq(u))
