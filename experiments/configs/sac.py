"""SAC presets (docs/method.md section 8).  ``--config=experiments/configs/sac.py:ARG`` where ARG is

    TASK            the reference settings on a DMC task, e.g. cheetah-run
    cpu[,TASK]      a small preset for cartpole-swingup on a 2-core CPU
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

The defaults are ``rfm_jax.agents.sac.SACSettings`` and ``SACHyper``.  Any field can be
overridden, and hyper fields swept in one program, e.g. ``--config.sweep.target_entropy_scale=0.5,1``.
"""

from configs import common

CPU = {
    "num_seeds": 3, "total_steps": 40_000, "warmup_steps": 5_000, "batch_size": 128, "replay_capacity": 50_000,
    "eval_every": 5_000, "eval_episodes": 5, "checkpoint_every": 5_000,
    "agent.actor_hidden": (128, 128), "agent.critic_hidden": (64, 64),
}
SMOKE = {
    **CPU, "num_seeds": 2, "total_steps": 300, "warmup_steps": 100, "batch_size": 16, "replay_capacity": 1_000,
    "eval_every": 150, "eval_episodes": 1, "log_every": 50, "checkpoint_every": 100,
    "agent.actor_hidden": (16, 16), "agent.critic_hidden": (16, 16),
}
# The probe's greedy action is the mean action tanh(mu).
PROBE = {
    "agent.actor_hidden": (32, 32), "agent.critic_hidden": (32, 32), "agent.actor_lr": 3e-3,
    "agent.critic_lr": 3e-3, "agent.alpha_lr": 3e-3, "hyper.gamma": 0.0, "hyper.init_alpha": 0.1,
}
PROBE_TOLERANCE = 0.1

get_config = common.presets("sac", cpu=CPU, smoke=SMOKE)
