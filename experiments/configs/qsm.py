"""QSM presets (docs/method.md section 8): a VP diffusion policy whose epsilon network is regressed
onto -c grad_a Q at noisy replay actions.  ``--config=experiments/configs/qsm.py:ARG`` where ARG is

    TASK            QSM's reference settings on a DMC task (c = 50, 20 DDIM steps)
    cpu[,TASK]      the RFM cpu preset's sizes on cartpole-swingup (2-core CPU)
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

The defaults are ``rfm_jax.agents.qsm.QSMSettings`` and ``QSMHyper``.  Hyper fields can be swept
in one program, e.g. ``--config.sweep.score_scale=10,50``.
"""

from configs import common, rfm

# RFM's preset sizes, with 10 DDIM steps: the VP path's alpha rises from 0.007, and on the bandit probe
# (tests/agents/test_probe.py) 4 steps missed the optimum by 0.27 against 0.10 with 10.
CPU = {**common.for_agent("qsm", rfm.CPU), "agent.num_ode_steps": 10}
SMOKE = common.for_agent("qsm", rfm.SMOKE)
# c = 50 is sized for DMC's Q scale; on the probe (|grad Q| <= 4) it overshoots and the samples
# saturate (error 0.70, measured).  c = 5 with 10 VP steps gives 0.10; with 4 steps 0.27.
PROBE = {
    "agent.num_eval_particles": 8, "agent.num_ode_steps": 10, "agent.actor_width": 32, "agent.actor_blocks": 1,
    "agent.actor_embed_dim": 8, "agent.critic_hidden": (32, 32), "agent.actor_lr": 3e-3, "agent.critic_lr": 3e-3,
    "hyper.gamma": 0.0, "hyper.score_scale": 5.0,
}
PROBE_TOLERANCE = 0.15

get_config = common.presets("qsm", cpu=CPU, smoke=SMOKE)
