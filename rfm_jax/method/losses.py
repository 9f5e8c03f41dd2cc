"""Per-example, unreduced losses for flow, diffusion and Gaussian policies and for critics.

Every function acts on ONE example (one state): networks come in as closures such as
``lambda x, t: net.apply(params, obs, x, t)``; ``jax.vmap`` over the batch and average.
Actor losses return ``(loss [], aux)`` so they plug into ``jax.value_and_grad(..., has_aux=True)``.

Actor targets (A = action dims; x1 an endpoint, e.g. a policy sample; t ~ U[t_min, t_max], and
t_max defaults to 1 - t_min):

    x_t = alpha_t x1 + beta_t x0,  x0 ~ p0,   (mu0, mu1) = posterior_mean(x_t, t)   (stop-gradient)
    RFM velocity:  || v_theta(x_t, t)   - (alpha'_t mu1 + beta'_t mu0) ||^2 / A
    RFM noise:     || eps_theta(x_t, t) - mu0 ||^2 / A
    QNE:           RFM noise with eta = 0 (plain SNIS noise expectation)
    DQS:           || s_theta(x_t, t) + mu0 / beta_t ||^2 / A with eta = 1 (gradient expectation)
    QSM:           || eps_theta(x_t, t) + c grad_a Q(x_t) ||^2 / A

Critic and SAC losses (K ensemble members):

    TD:          y = r_t + gamma discount_t (min_k Qbar_k(s_t, a_t) - temp log pi(a_t | s_t))
                 loss = mean_k (Q_k(s_tm1, a_tm1) - y)^2
    SAC actor:   temp log pi(a | s) - min_k Q_k(s, a)
    temperature: -log_temp (log pi(a | s) + target_entropy)    (stop-gradient on log pi)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rfm_jax.method.estimators import PosteriorEstimate, Source, posterior_mean, standard_normal
from rfm_jax.method.schedules import Schedule, velocity_from_means
from rfm_jax.method.validation import check_rank

Array = jax.Array


class ActorLossAux(NamedTuple):
    """Diagnostics of a posterior-mean actor loss: the sampled time t [], the noisy point x_t [A],
    the regression target [A] and the posterior estimate."""

    t: Array
    x_t: Array
    target: Array
    estimate: PosteriorEstimate


class RegressionNoise(NamedTuple):
    """The draws of one posterior regression, given instead of a key (fixed-noise and golden
    tests): the time t [], the source draw x0 [A] that places x_t and the estimator's particles
    [N, A]."""

    t: Array
    x0: Array
    particles: Array


def noisy_point(key: Array, x1: Array, *, schedule: Schedule, t_min=0.01, t_max=None, source: Source | None = None):
    """Draw t ~ U[t_min, t_max] (t_max defaults to 1 - t_min) and x_t = alpha_t x1 + beta_t x0 with
    x0 ~ p0.  Returns (t [], x_t [A])."""
    check_rank("noisy_point", "x1", x1, 1, "[A]")
    x1 = jax.lax.stop_gradient(x1)  # an on-policy endpoint only places x_t; no gradient flows through it
    source = standard_normal() if source is None else source
    key_t, key_noise = jax.random.split(key)
    t_max = 1.0 - t_min if t_max is None else t_max
    t = jax.random.uniform(key_t, (), minval=t_min, maxval=t_max)
    x0 = source.sample(key_noise, (1, x1.shape[0]))[0].astype(x1.dtype)
    return t, schedule.alpha(t) * x1 + schedule.beta(t) * x0


_TARGETS = {
    "velocity": lambda schedule, t, e: velocity_from_means(schedule, t, e.noise_mean, e.data_mean),
    "noise": lambda schedule, t, e: e.noise_mean,
    "score": lambda schedule, t, e: -e.noise_mean / schedule.beta(t),
}


def _posterior_regression(
    key, model_fn, log_prob_fn, x1, target, *, schedule, t_min=0.01, t_max=None, source=None, noise=None,
    **estimator_kwargs
):
    if noise is None:
        key_point, key_estimate = jax.random.split(key)
        t, x_t = noisy_point(key_point, x1, schedule=schedule, t_min=t_min, t_max=t_max, source=source)
    else:  # the draws given (RegressionNoise): the key is unused
        x1 = jax.lax.stop_gradient(x1)
        t, key_estimate = noise.t, None
        x_t = schedule.alpha(t) * x1 + schedule.beta(t) * noise.x0.astype(x1.dtype)
        estimator_kwargs = {**estimator_kwargs, "particles": noise.particles}
    estimate = posterior_mean(key_estimate, log_prob_fn, x_t, t, schedule=schedule, source=source, **estimator_kwargs)
    estimate = jax.tree.map(jax.lax.stop_gradient, estimate)
    target_t = _TARGETS[target](schedule, t, estimate)
    prediction = model_fn(x_t, t)
    check_rank(f"{target} loss", "model_fn(x_t, t)", prediction, 1, "[A]")
    return jnp.mean((prediction - target_t) ** 2), ActorLossAux(t, x_t, target_t, estimate)


def rfm_velocity_loss(
    key: Array, velocity_fn: Callable, log_prob_fn: Callable, x1: Array, *, schedule: Schedule, **kwargs
):
    """RFM flow loss for one example: regress ``velocity_fn(x_t [A], t []) -> [A]`` onto
    alpha' mu1 + beta' mu0 (mu1 - mu0 on the linear path).

    ``log_prob_fn(x1 [A]) -> []`` is the log target (e.g. ``tanh_boltzmann_log_prob``); ``x1`` [A]
    is the endpoint that places x_t.  Keyword arguments: ``t_min`` (0.01), ``t_max`` (1 - t_min),
    ``source`` (N(0, I)), ``noise`` (a ``RegressionNoise`` used instead of drawing from ``key``),
    and those of ``posterior_mean``: ``num_particles`` (required),
    ``control_variate``, ``ridge``, ``clip``, ``coef_space``, ``particle_batch``.
    Returns (loss [], ActorLossAux).
    """
    return _posterior_regression(key, velocity_fn, log_prob_fn, x1, "velocity", schedule=schedule, **kwargs)


def rfm_noise_loss(key: Array, noise_fn: Callable, log_prob_fn: Callable, x1: Array, *, schedule: Schedule, **kwargs):
    """RFM diffusion loss for one example: regress ``noise_fn(x_t, t) -> [A]`` (epsilon
    prediction) onto mu0 = E[X0 | x_t].  Arguments as ``rfm_velocity_loss``."""
    return _posterior_regression(key, noise_fn, log_prob_fn, x1, "noise", schedule=schedule, **kwargs)


def qne_loss(key, noise_fn, log_prob_fn, x1, *, schedule: Schedule, num_particles: int, t_min=0.01, t_max=None):
    """QNE / MaxEntDP: epsilon regressed onto the plain SNIS noise expectation (eta = 0)."""
    kwargs = dict(num_particles=num_particles, control_variate=0.0, t_min=t_min, t_max=t_max)
    return _posterior_regression(key, noise_fn, log_prob_fn, x1, "noise", schedule=schedule, **kwargs)


def dqs_loss(key, score_fn, log_prob_fn, x1, *, schedule: Schedule, num_particles: int, t_min=0.01, t_max=None):
    """DQS / iDEM: a score network regressed onto -mu0 / beta with the gradient expectation
    (eta = 1), i.e. (1 / alpha) sum_i w_i grad log p1(x1^i)."""
    kwargs = dict(num_particles=num_particles, control_variate=1.0, t_min=t_min, t_max=t_max)
    return _posterior_regression(key, score_fn, log_prob_fn, x1, "score", schedule=schedule, **kwargs)


def qsm_loss(key, noise_fn, q_fn, x1, *, schedule: Schedule, scale=50.0, t_min=0.01, t_max=None,
             source: Source | None = None):
    """QSM: epsilon at a noisy action regressed onto -scale * grad_a Q(s, x_t).  ``q_fn(a [A]) -> []``.
    Returns (loss [], (t, x_t, target))."""
    t, x_t = noisy_point(key, x1, schedule=schedule, t_min=t_min, t_max=t_max, source=source)
    target = jax.lax.stop_gradient(-scale * jax.grad(q_fn)(x_t))
    prediction = noise_fn(x_t, t)
    check_rank("qsm_loss", "noise_fn(x_t, t)", prediction, 1, "[A]")
    return jnp.mean((prediction - target) ** 2), (t, x_t, target)


class TDAux(NamedTuple):
    """TD diagnostics: the target y [] and the errors Q_k - y [K]."""

    target: Array
    td_error: Array


def critic_td_loss(q_tm1: Array, r_t, discount_t, target_q_t: Array, *, gamma, log_prob_t=0.0, temperature=0.0):
    """Ensemble TD loss for one transition (a_t drawn from the policy at s_t).

    q_tm1: [K] online Q_k(s_tm1, a_tm1).  target_q_t: [K] target-network Qbar_k(s_t, a_t).
    r_t, discount_t: [] (discount is the environment's: 0 only at a true terminal, so a time-limit
    end still bootstraps).  log_prob_t, temperature: the soft (SAC) backup term; 0 for RFM.
    Returns (mean_k (q_k - y)^2 [], TDAux).
    """
    name = "critic_td_loss"
    check_rank(name, "q_tm1", q_tm1, 1, "[K]")
    check_rank(name, "target_q_t", target_q_t, 1, "[K]")
    check_rank(name, "r_t", r_t, 0, "[]")
    check_rank(name, "discount_t", discount_t, 0, "[]")
    next_value = jnp.min(target_q_t) - temperature * log_prob_t
    target = jax.lax.stop_gradient(r_t + gamma * discount_t * next_value)
    td_error = q_tm1 - target
    return jnp.mean(td_error**2), TDAux(target, td_error)


def sac_actor_loss(q: Array, log_prob, *, temperature):
    """SAC actor loss for one state with a reparameterised action a ~ pi:
    temperature * log pi(a|s) - min_k Q_k(s, a), no gradient into the temperature.  q: [K], log_prob: []."""
    check_rank("sac_actor_loss", "q", q, 1, "[K]")
    check_rank("sac_actor_loss", "log_prob", log_prob, 0, "[]")
    return jax.lax.stop_gradient(temperature) * log_prob - jnp.min(q)


def sac_temperature_loss(log_temperature, log_prob, *, target_entropy):
    """SAC temperature loss -log_temp * (log pi + target_entropy), stop-gradient on log pi, so the
    temperature grows when the entropy -log pi falls below ``target_entropy`` (usually -A)."""
    check_rank("sac_temperature_loss", "log_prob", log_prob, 0, "[]")
    return -log_temperature * jax.lax.stop_gradient(log_prob + target_entropy)
