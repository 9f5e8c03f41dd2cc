"""DQS (Diffusion Q-Sampling; docs/method.md section 8) as the eta = 1 preset of RFM: a VE
diffusion policy (sigma from 1 at t = 0 down to 1e-5 at t = 1) whose score network is regressed
onto the SNIS mean of the target's gradient (iDEM's estimator):

    x_t = u1 + sigma_t eps,   x0^i ~ N(0, I),   u1^i = x_t - sigma_t x0^i,   w_i ∝ p1(u1^i)
    score target  S(x_t) = sum_i w_i grad log p1(u1^i)          (= -mu0 / sigma_t at eta = 1)
    loss = mean_b sigma_t^2 || s_theta(s_b, x_t, t, lambda) - S(x_t) ||^2 / A

with log p1(u) = min_k Q_k(s, tanh u) / lambda + sum_j log(1 - tanh^2 u_j).  The score network is
parameterised as s_theta = -eps_theta / sigma_t, so the sigma^2-weighted score loss above is exactly
the epsilon loss || eps_theta - mu0 ||^2 of ``make_rfm(policy="diffusion")`` with
``control_variate="fixed"`` and eta = 1: ``make_dqs`` is that, with DQS's defaults (VE schedule,
20 DDIM steps, 1000 posterior particles, lambda = 0.05).  Everything else (critics, on-policy
endpoints, acting by Boltzmann resampling or argmax-Q) is the RFM agent's, so DQS, QNE and RFM
differ only in the estimator.

Departures from the DQS paper: the policy lives in the tanh latent, the sampler starts from
N(0, I) = N(0, sigma_max^2 I) at t_min and runs DDIM (the paper: an SDE sampler), and the score is
not clipped (the epsilon parameterisation keeps the targets O(1) at small sigma).
"""

from __future__ import annotations

from rfm_jax.agents import base, particles, rfm

HYPER = rfm.RFMHyper(temperature=0.05, eta=1.0)  # DQS's defaults; eta = 1 is the gradient expectation


def check_hyper(hyper: rfm.RFMHyper, name: str = "dqs") -> None:
    """RFM's checks, and eta = 1 (sweep eta with ``make_rfm``'s fixed mode instead)."""
    base.check_leaf(name, "eta", hyper.eta, lambda v: v == 1.0, "1 (DQS's gradient expectation)")
    rfm.check_hyper(hyper, name)


SPEC = base.AgentSpec(
    name="dqs", build=rfm.build, settings=rfm.RFMSettings, hyper=HYPER, check_hyper=check_hyper,
    fixed=dict(policy="diffusion", diffusion_schedule="ve", control_variate="fixed", coef_space="noise"),
    fixed_why="VE diffusion, eta = 1", base_factory="make_rfm",
    defaults=dict(num_ode_steps=20, num_posterior_particles=1000, temperature_mode="fixed"),
    hyper_fields=("temperature", "temperature_final", "temperature_steps", "gamma", "tau",
                  *particles.TEMPERATURE_FIELDS))
SPECS = (SPEC,)  # what the registry finds in this file
FIXED = tuple(SPEC.fixed)


def make_dqs(*, obs_dim: int, action_dim: int, **settings) -> base.Agent:
    """DQS's pure functions; settings as ``make_rfm``'s except the ones DQS fixes (``FIXED``)."""
    return base.make(SPEC, obs_dim=obs_dim, action_dim=action_dim, **settings)
