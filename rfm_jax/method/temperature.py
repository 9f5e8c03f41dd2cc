"""Automatic temperature of the Boltzmann target exp(Q / lambda): the math of one example.

**ESS of the Boltzmann weights over policy particles.**  At a state s with P policy particles
a_1..a_P ~ pi(.|s) and critic values q_i = Q(s, a_i), the Boltzmann weights are
w_i = softmax_i(q_i / lambda), and their effective-sample-size fraction

    f(lambda) = ESS / P = 1 / (P sum_i w_i^2)   in [1 / P, 1],

rises monotonically from 1/P (greedy, lambda -> 0) to 1 (uniform, lambda -> inf).  Holding the
batch mean of f at a target f* is a constraint; dual ascent on log lambda is

    log lambda <- clip(log lambda + lr (f* - mean_s f_s(lambda)), log lambda_min, log lambda_max),

whose only fixed point is mean_s f_s(lambda) = f* (f increases in lambda, so the step moves
lambda toward it).

**The target's default, f* = exp(-1) ~ 0.37.**  If the q_i at a state are roughly Gaussian with
standard deviation sigma_Q, the weights are log-normal with log-scale sigma = sigma_Q / lambda,
and for large P, f -> E[w]^2 / E[w^2] = exp(-sigma^2).  f* = exp(-1) is then lambda = sigma_Q:
the temperature equals the spread of Q over the policy's own actions, whatever the task's reward
scale.  A larger f* is a softer target (f* = exp(-1/4) is lambda = 2 sigma_Q).

**Entropy target.**  With H(lambda) the entropy of the policy pi(.|s, lambda) (increasing in
lambda: a softer Boltzmann target is a broader policy), holding H at H* (SAC's -|A| by default) is
the same dual ascent on the entropy error per action dimension,

    log lambda <- clip(log lambda + lr (H* - H) / |A|, log lambda_min, log lambda_max),

so that one learning rate suits both modes (|f* - f| <= 1; (H* - H) / |A| is nats per dimension).

Shapes: q [P] for one state (``ess_fraction``), [B, P] for a batch (``ess_temperature_step``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rfm_jax.method.validation import check_rank

Array = jax.Array
DEFAULT_ESS_TARGET = math.exp(-1.0)  # lambda = std of Q over the policy particles (module docstring)


def ess_fraction(q: Array, temperature: Array) -> Array:
    """f = 1 / (P sum_i w_i^2) of w = softmax(q / temperature); q [P] -> []."""
    check_rank("ess_fraction", "q", q, 1, "[P]")
    log_w = jax.nn.log_softmax(q / temperature)
    return jnp.exp(-jax.nn.logsumexp(2.0 * log_w)) / q.shape[0]


def ess_temperature_step(log_temperature: Array, q: Array, target: Array, lr: Array,
                         log_bounds: tuple[float, float]) -> tuple[Array, Array]:
    """One dual-ascent step of log lambda toward mean_s f_s(lambda) = target; q [B, P].

    Returns (new log lambda [], mean ESS fraction at the old lambda []).  ``log_bounds`` keep
    lambda finite and positive; a NaN q gives a NaN lambda, which the loop's guard stops."""
    check_rank("ess_temperature_step", "q", q, 2, "[B, P]")
    fraction = jnp.mean(jax.vmap(ess_fraction, (0, None))(q, jnp.exp(log_temperature)))
    new = jnp.clip(log_temperature + lr * (target - fraction), *log_bounds)
    return new, fraction


def entropy_temperature_step(log_temperature: Array, entropy: Array, target: Array, lr: Array,
                             log_bounds: tuple[float, float], action_dim: int) -> Array:
    """One dual-ascent step of log lambda toward H = target (module docstring); entropy [] is the
    policy's at the old lambda.  A NaN entropy gives a NaN lambda, as in ``ess_temperature_step``."""
    check_rank("entropy_temperature_step", "entropy", entropy, 0, "[]")
    return jnp.clip(log_temperature + lr * (target - entropy) / action_dim, *log_bounds)
