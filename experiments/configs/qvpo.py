"""QVPO presets (docs/method.md section 8): a cosine-VP diffusion policy trained by the denoising loss
on its own samples weighted by max(Q - mean Q, 0).  ``--config=experiments/configs/qvpo.py:ARG`` where ARG is

    TASK            QVPO's reference settings on a DMC task (64 weighted samples per state, 20 DDIM steps)
    cpu[,TASK]      the RFM cpu preset's sizes on cartpole-swingup (2-core CPU)
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

The defaults are ``rfm_jax.agents.qvpo.QVPOSettings`` and ``QVPOHyper``.  Hyper fields can be swept
in one program, e.g. ``--config.sweep.temperature=0.01,0.02``.
"""

from configs import common, rfm

CPU = common.for_agent("qvpo", rfm.CPU)  # the same sizes as RFM's presets
SMOKE = common.for_agent("qvpo", rfm.SMOKE)
# 4 DDIM steps, 8 eval particles and entropy weight 0.1 are seed-dependent on the probe: error 0.07-0.60
# over 5 seeds (measured).  8 steps, argmax-Q over 32 and weight 0.3: 0.055-0.10.
PROBE = {
    "agent.num_train_particles": 16, "agent.num_act_particles": 4, "agent.num_eval_particles": 32,
    "agent.num_ode_steps": 8, "agent.actor_width": 32, "agent.actor_blocks": 1, "agent.actor_embed_dim": 8,
    "agent.critic_hidden": (32, 32), "agent.actor_lr": 3e-3, "agent.critic_lr": 3e-3,
    "hyper.temperature": 0.02, "hyper.gamma": 0.0, "hyper.entropy_weight": 0.3,
}
PROBE_TOLERANCE = 0.15

get_config = common.presets("qvpo", cpu=CPU, smoke=SMOKE)
