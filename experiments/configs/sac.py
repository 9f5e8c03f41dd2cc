"""SAC configs (docs/method.md section 8).  ``--config=experiments/configs/sac.py:ARG`` where ARG is

    TASK            the reference settings on a DMC task, e.g. cheetah-run
    cpu[,TASK]      a small preset for cartpole-swingup on a 2-core CPU
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

Any field can be overridden, and hyper fields swept in one program, e.g.
``--config.sweep.target_entropy_scale=0.5,1``.
"""

from configs import common
from ml_collections import config_dict


def reference(task: str = "cheetah-run") -> config_dict.ConfigDict:
    c = common.protocol(task)
    c.algo = "sac"  # agent in rfm_jax.agents.REGISTRY
    c.agent = config_dict.ConfigDict()
    c.agent.actor_hidden = (256, 256)  # hidden sizes of the tanh-Gaussian policy MLP
    c.agent.critic_hidden = (256, 256)  # hidden sizes of each critic MLP
    c.agent.num_critics = 2  # critics in the ensemble (the TD target and the actor use their min)
    c.agent.actor_lr = 3e-4  # Adam learning rate of the policy
    c.agent.critic_lr = 3e-4  # Adam learning rate of the critics
    c.agent.alpha_lr = 3e-4  # Adam learning rate of log alpha
    c.agent.grad_clip = config_dict.FieldReference(10.0, field_type=object)  # norm clip of actor and each critic; none

    c.hyper = config_dict.ConfigDict()
    c.hyper.init_alpha = 1.0  # initial entropy temperature alpha
    c.hyper.target_entropy_scale = 1.0  # alpha is tuned towards an entropy of -scale * action_dim
    c.hyper.gamma = 0.99  # discount
    c.hyper.tau = 0.005  # Polyak rate of the target critics
    return common.add_sweep(c)


# Overrides of the reference config (flattened field names), as the RFM presets.
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

cpu = common.preset(reference, CPU)
smoke = common.preset(reference, SMOKE)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return common.choose(arg, {"reference": reference, "cpu": cpu, "smoke": smoke})


def agent_kwargs(config) -> dict:
    """``make_sac`` keyword arguments of ``config.agent``."""
    kwargs = dict(config.agent)
    for name in ("actor_hidden", "critic_hidden"):
        kwargs[name] = tuple(kwargs[name])
    return kwargs
