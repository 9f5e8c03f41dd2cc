"""Safeguarded Langevin-Stein coefficients for ``estimators.posterior_mean`` (issue 30, part 2).

The plug-in optimal coefficient (docs/method.md section 4) is fitted on the few particles that carry
the weight at a low effective sample size and then extrapolates, so it can be worse than plain SNIS.
The modes here fit the isotropic plug-in coefficient (in noise space Lam = scale * coef, scale = 1,
or (alpha/beta)^2 for a data-space coef), guard it, and bound the correction d = mu0 - x_bar:

    coef <- clip(coef, -clip, clip)                   (in ``coef_space``, as the optimal modes)
    Lam  <- min(max(Lam, 0), 1)                       (0 <= Lam <= 1 in noise space)
    d    <- d min(1, TRUST se / |d|),  se^2 = sum_i w_i^2 |x0_i - x_bar|^2

The bound on Lam is that of the limit coefficient Lam* = A / tr E_q[s s^T]: the noise posterior
q(x0 | x_t) ∝ N(x0; 0, I) p1(x1) has Fisher information >= I when p1 is log-concave, so 0 < Lam* <= 1.
se is the delta-method standard error of plain SNIS, the size of the error the correction is meant to
cancel (a trust region): at ESS = 1 it is 0 and the estimate is plain SNIS.
"safe_isotropic" fits on all particles; "crossfit_isotropic" fits Lam_A on the even-indexed half A and
Lam_B on the odd half B (each with its weights renormalised) and applies each to the other half, with
the global SNIS weights w:  d = Lam_B sum_{i in A} w_i s_i + Lam_A sum_{i in B} w_i s_i.
Measured in experiments/estimator_variance.py; "safe_isotropic" is the recommended one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
TRUST = 2.0  # |d| <= TRUST se; measured 1, 2, 3 (3 lets rare huge errors through on a hopper critic)


def _dot(a: Array, b: Array) -> Array:  # full float32 on GPUs too, as estimators.weighted_sum
    return jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST)


def fit_isotropic(log_w: Array, mask: Array, x0: Array, s0: Array, *, scale, ridge) -> Array:
    """The isotropic plug-in coefficient of the particles in ``mask`` alone, their weights v renormalised:

        coef = -sum_ij v_i^2 dx_ij ds_ij / (scale sum_ij v_i^2 ds_ij^2 + ridge),   d = minus the v-mean,

    (both sums divided by sum v^2, as ``posterior_mean``).  Returns coef []."""
    log_v = jax.nn.log_softmax(jnp.where(mask, log_w, -jnp.inf))
    v, v2 = jnp.exp(log_v), jax.nn.softmax(2.0 * log_v)
    top = jnp.argmax(log_v)  # centre on the heaviest particle, as posterior_mean
    keep = (mask & (jnp.arange(mask.shape[0]) != top))[:, None]
    x_rel, s_rel = jnp.where(keep, x0 - x0[top], 0.0), jnp.where(keep, s0 - s0[top], 0.0)
    dx, ds = x_rel - _dot(v, x_rel), s_rel - _dot(v, s_rel)
    cov, var = jnp.sum(_dot(v2, dx * ds)), jnp.sum(_dot(v2, ds * ds))
    ess = jnp.exp(-jax.nn.logsumexp(2.0 * log_v))
    denominator = scale * var + ridge * ess
    return jnp.where(denominator > 0, -cov / jnp.where(denominator > 0, denominator, 1.0), 0.0)


def guard(coef: Array, *, scale, clip) -> Array:
    """The clip (in ``coef_space``) and 0 <= Lam <= 1 of the module docstring, on a ``coef_space`` coef."""
    if clip is not None:
        coef = jnp.clip(coef, -clip, clip)
    return jnp.clip(coef * scale, 0.0, 1.0) / scale


def safe_correction(log_w: Array, x0: Array, s0: Array, *, scale, ridge, clip, crossfit: bool) -> tuple[Array, Array]:
    """(Stein correction d [A] to add to the SNIS mean, coefficient [A] in ``coef_space``), the
    coefficient after the trust region.  With ``crossfit`` the reported coefficient is the weight-mass
    average W_A coef_B + W_B coef_A (W = a half's sum of global weights), times the trust factor."""
    n = log_w.shape[0]
    w = jnp.exp(log_w)
    halves = [jnp.ones(n, bool)] if not crossfit else [jnp.arange(n) % 2 == 0, jnp.arange(n) % 2 == 1]
    coefs = [guard(fit_isotropic(log_w, mask, x0, s0, scale=scale, ridge=ridge), scale=scale, clip=clip)
             for mask in halves]
    applied_to = halves if not crossfit else halves[::-1]  # crossfit: half A's coef corrects half B
    correction, coef = jnp.zeros(x0.shape[1:], x0.dtype), jnp.zeros((), x0.dtype)
    for c, mask in zip(coefs, applied_to, strict=True):
        w_half = jnp.where(mask, w, 0.0)
        correction += scale * c * _dot(w_half, s0)
        coef += jnp.sum(w_half) * c
    # Trust region: se^2 = sum_i w_i^2 |x0_i - x_bar|^2 (w^2 / sum w^2 in the softmax, times sum w^2).
    top = jnp.argmax(log_w)
    x_rel = jnp.where((jnp.arange(n) != top)[:, None], x0 - x0[top], 0.0)
    spread = jnp.sum(_dot(jax.nn.softmax(2.0 * log_w), (x_rel - _dot(w, x_rel)) ** 2))
    se = jnp.sqrt(spread * jnp.exp(jax.nn.logsumexp(2.0 * log_w)))
    norm = jnp.sqrt(jnp.sum(correction**2))
    factor = jnp.minimum(1.0, TRUST * se / jnp.where(norm > 0, norm, 1.0))
    return correction * factor, jnp.broadcast_to(coef * factor, x0.shape[1:])
