"""QNE / MaxEntDP (docs/method.md section 8) as the eta = 0 member of the RFM family: a cosine-VP
diffusion policy with epsilon prediction, regressed onto the plain self-normalised importance
sampling estimate of the noise posterior mean (no control variate):

    x_t = alpha_t u1 + beta_t eps,   x0^i ~ N(0, I),   w_i ∝ p1((x_t - beta_t x0^i) / alpha_t)
    loss = mean_b || eps_theta(s_b, x_t, t, lambda) - sum_i w_i x0^i ||^2 / A

with log p1(u) = min_k Q_k(s, tanh u) / lambda + sum_j log(1 - tanh^2 u_j).  Everything else (the
critic ensemble, on-policy endpoints and a' chosen with the pre-update critics, DDIM sampling,
acting by Boltzmann resampling or argmax-Q) is the RFM agent's: ``make_qne`` is ``make_rfm`` with
``policy="diffusion"``, ``control_variate="none"`` and QNE's defaults (20 sampler steps).

Departures from the QNE paper, kept so that QNE and RFM differ only in the estimator: the policy
lives in the tanh latent (the paper clips clean candidates to [-1, 1]) and the critics use the hard
backup (the paper adds an entropy term estimated by sampling).
"""

from __future__ import annotations

from rfm_jax.agents import base
from rfm_jax.agents.rfm import RFMHyper, make_rfm

FIXED = ("policy", "control_variate", "coef_space")  # what makes RFM into QNE


def make_qne(*, num_ode_steps: int = 20, diffusion_schedule: str = "cosine", x1_bound: float | None = base.U_MAX,
             **kwargs) -> base.Agent:
    """QNE's pure functions; keyword arguments as ``make_rfm`` except the ones QNE fixes (``FIXED``)."""
    for arg in FIXED:
        if arg in kwargs:
            raise ValueError(f"make_qne: `{arg}` is fixed by QNE (diffusion, eta = 0); use make_rfm to change it.")
    try:
        agent = make_rfm(policy="diffusion", control_variate="none", diffusion_schedule=diffusion_schedule,
                         num_ode_steps=num_ode_steps, x1_bound=x1_bound, **kwargs)
    except ValueError as error:  # the same checks, named after this factory
        raise ValueError(str(error).replace("make_rfm:", "make_qne:", 1)) from None
    return agent._replace(name="qne", hyper=RFMHyper())
