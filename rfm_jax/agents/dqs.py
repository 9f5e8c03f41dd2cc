"""DQS (Diffusion Q-Sampling; docs/method.md section 8) as the eta = 1 member of the RFM family: a
VE diffusion policy (sigma from 1 at t = 0 down to 1e-5 at t = 1) whose score network is
regressed onto the SNIS mean of the target's gradient (iDEM's estimator):

    x_t = u1 + sigma_t eps,   x0^i ~ N(0, I),   u1^i = x_t - sigma_t x0^i,   w_i ∝ p1(u1^i)
    score target  S(x_t) = sum_i w_i grad log p1(u1^i)          (= -mu0 / sigma_t at eta = 1)
    loss = mean_b sigma_t^2 || s_theta(s_b, x_t, t, lambda) - S(x_t) ||^2 / A

with log p1(u) = min_k Q_k(s, tanh u) / lambda + sum_j log(1 - tanh^2 u_j).  The score network is
parameterised as s_theta = -eps_theta / sigma_t, so the sigma^2-weighted score loss above is exactly
the epsilon loss || eps_theta - mu0 ||^2 of ``make_rfm(policy="diffusion")`` with
``control_variate="fixed"`` and eta = 1: ``make_dqs`` is that, with DQS's defaults (VE schedule,
20 DDIM steps, lambda = 0.05).  Everything else (critics, on-policy endpoints, acting by Boltzmann
resampling or argmax-Q) is the RFM agent's, so DQS, QNE and RFM differ only in the estimator.

Departures from the DQS paper: the policy lives in the tanh latent, the sampler starts from
N(0, I) = N(0, sigma_max^2 I) at t_min and runs DDIM (the paper: an SDE sampler), and the score is
not clipped (the epsilon parameterisation keeps the targets O(1) at small sigma).
"""

from __future__ import annotations

from rfm_jax.agents import base
from rfm_jax.agents.rfm import RFMHyper, make_rfm
from rfm_jax.agents.rfm import check_hyper as rfm_check_hyper

FIXED = ("policy", "control_variate", "coef_space", "diffusion_schedule")  # what makes RFM into DQS
HYPER = RFMHyper(temperature=0.05, eta=1.0)  # DQS's defaults; eta = 1 is the gradient expectation


def make_dqs(*, num_ode_steps: int = 20, num_posterior_particles: int = 1000, **kwargs) -> base.Agent:
    """DQS's pure functions; keyword arguments as ``make_rfm`` except the ones DQS fixes (``FIXED``)."""
    for arg in FIXED:
        if arg in kwargs:
            raise ValueError(f"make_dqs: `{arg}` is fixed by DQS (VE diffusion, eta = 1); use make_rfm to change it.")
    try:
        agent = make_rfm(policy="diffusion", diffusion_schedule="ve", control_variate="fixed", coef_space="noise",
                         num_ode_steps=num_ode_steps, num_posterior_particles=num_posterior_particles, **kwargs)
    except ValueError as error:  # the same checks, named after this factory
        raise ValueError(str(error).replace("make_rfm:", "make_dqs:", 1)) from None
    return agent._replace(name="dqs", hyper=HYPER, check_hyper=check_hyper)


def check_hyper(hyper: RFMHyper) -> None:
    """RFM's checks named after DQS, and eta = 1 (sweep eta with ``make_rfm``'s fixed mode instead)."""
    base.check_leaf("dqs", "eta", hyper.eta, lambda v: v == 1.0, "1 (DQS's gradient expectation)")
    try:
        rfm_check_hyper(hyper)
    except ValueError as error:
        raise ValueError(str(error).replace("rfm:", "dqs:", 1)) from None
