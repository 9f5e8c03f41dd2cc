"""QNE / MaxEntDP (docs/method.md section 8) as the eta = 0 preset of RFM: a cosine-VP diffusion
policy with epsilon prediction, regressed onto the plain self-normalised importance sampling
estimate of the noise posterior mean (no control variate):

    x_t = alpha_t u1 + beta_t eps,   x0^i ~ N(0, I),   w_i ∝ p1((x_t - beta_t x0^i) / alpha_t)
    loss = mean_b || eps_theta(s_b, x_t, t, lambda) - sum_i w_i x0^i ||^2 / A

with log p1(u) = min_k Q_k(s, tanh u) / lambda + sum_j log(1 - tanh^2 u_j).  Everything else (the
critic ensemble, on-policy endpoints and a' chosen with the pre-update critics, DDIM sampling,
acting by Boltzmann resampling or argmax-Q) is the RFM agent's: ``make_qne`` is ``make_rfm`` with
``policy="diffusion"``, ``control_variate="none"`` and QNE's defaults (20 sampler steps, the DDIM's
clean latent clipped to |tanh u| <= 0.999 as the reference clips to [-1, 1]).

Departures from the QNE paper, kept so that QNE and RFM differ only in the estimator: the policy
lives in the tanh latent (the paper clips clean candidates to [-1, 1]) and the critics use the hard
backup (the paper adds an entropy term estimated by sampling).
"""

from __future__ import annotations

from rfm_jax.agents import base, particles, rfm

SPEC = base.AgentSpec(
    name="qne", build=rfm.build, settings=rfm.RFMSettings, hyper=rfm.RFMHyper(), check_hyper=rfm.check_hyper,
    fixed=dict(policy="diffusion", control_variate="none", coef_space="data"), fixed_why="diffusion, eta = 0",
    base_factory="make_rfm", defaults=dict(num_ode_steps=20, x1_bound=particles.U_MAX, temperature_mode="fixed"),
    hyper_fields=("temperature", "temperature_final", "temperature_steps", "gamma", "tau",
                  *particles.TEMPERATURE_FIELDS))
SPECS = (SPEC,)  # what the registry finds in this file
FIXED = tuple(SPEC.fixed)


def make_qne(*, obs_dim: int, action_dim: int, **settings) -> base.Agent:
    """QNE's pure functions; settings as ``make_rfm``'s except the ones QNE fixes (``FIXED``)."""
    return base.make(SPEC, obs_dim=obs_dim, action_dim=action_dim, **settings)
