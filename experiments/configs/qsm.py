"""QSM configs (docs/method.md section 8): a VP diffusion policy whose epsilon network is regressed onto
-c grad_a Q at noisy replay actions, with Gaussian exploration noise.
``--config=experiments/configs/qsm.py:ARG`` where ARG is

    TASK            QSM's reference settings on a DMC task (c = 50, exploration noise 0.1, 20 steps)
    cpu[,TASK]      the RFM cpu preset's sizes on cartpole-swingup (2-core CPU)
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

Hyper fields can be swept in one program, e.g. ``--config.sweep.score_scale=10,50``.
"""

from configs import common
from configs import rfm as rfm_configs
from ml_collections import config_dict

KEPT = ("num_eval_particles", "num_ode_steps", "t_min", "actor_width", "actor_blocks", "actor_block",
        "actor_embed_dim", "critic_hidden", "num_critics", "actor_lr", "critic_lr", "grad_clip")  # RFM's fields QSM has


def reference(task: str = "cheetah-run") -> config_dict.ConfigDict:
    c = rfm_configs.reference(task)
    c.algo = "qsm"  # agent in rfm_jax.agents.REGISTRY
    c.agent = config_dict.ConfigDict({k: v for k, v in c.agent.items() if k in KEPT})
    c.agent.num_ode_steps = 20  # DDIM steps from t_min to 1 - t_min on the VP path (QSM: 20)
    c.hyper = config_dict.ConfigDict()
    c.hyper.score_scale = 50.0  # c: the epsilon target is -c grad_a Q at the noisy action (QSM: 50)
    c.hyper.exploration_noise = 0.1  # std of the Gaussian noise on training actions (QSM: 0.1)
    c.hyper.gamma = 0.99  # discount
    c.hyper.tau = 0.005  # Polyak rate of the target critics
    return common.add_sweep(c)


def _kept(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if not k.startswith("agent.") or k.split(".", 1)[1] in KEPT}


# RFM's preset sizes, with 10 DDIM steps: the VP path's alpha rises from 0.007, and on the bandit probe
# (tests/test_probe.py) 4 steps missed the optimum by 0.27 against 0.10 with 10.
CPU = {**_kept(rfm_configs.CPU), "agent.num_ode_steps": 10}
SMOKE = _kept(rfm_configs.SMOKE)

cpu = common.preset(reference, CPU)
smoke = common.preset(reference, SMOKE)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return common.choose(arg, {"reference": reference, "cpu": cpu, "smoke": smoke})


def agent_kwargs(config) -> dict:
    """``make_qsm`` keyword arguments of ``config.agent``."""
    kwargs = dict(config.agent)
    kwargs["critic_hidden"] = tuple(kwargs["critic_hidden"])
    return kwargs
