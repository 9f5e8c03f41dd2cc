"""QVPO configs (docs/method.md section 8): a cosine-VP diffusion policy trained by the denoising loss
on its own samples weighted by max(Q - mean Q, 0).  ``--config=experiments/configs/qvpo.py:ARG`` where ARG is

    TASK            QVPO's reference settings on a DMC task (64 weighted samples per state, 20 DDIM steps)
    cpu[,TASK]      the RFM cpu preset's sizes on cartpole-swingup (2-core CPU)
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

Hyper fields can be swept in one program, e.g. ``--config.sweep.temperature=0.01,0.02``.
"""

from configs import common
from configs import rfm as rfm_configs
from ml_collections import config_dict

KEPT = ("num_train_particles", "num_data_particles", "num_eval_particles", "num_ode_steps", "t_min", "actor_width",
        "actor_blocks", "actor_block", "actor_embed_dim", "critic_hidden", "num_critics", "actor_lr", "critic_lr",
        "grad_clip", "sample_chunk")  # RFM's agent fields that QVPO has too


def reference(task: str = "cheetah-run") -> config_dict.ConfigDict:
    c = rfm_configs.reference(task)
    c.algo = "qvpo"  # agent in rfm_jax.agents.REGISTRY
    c.agent = config_dict.ConfigDict({k: v for k, v in c.agent.items() if k in KEPT})
    c.agent.num_train_particles = 64  # policy samples per state that the Q-weighted loss trains on (QVPO: 64)
    c.agent.num_ode_steps = 20  # DDIM steps from t_min to 1 - t_min (QVPO: 20)
    c.hyper = config_dict.ConfigDict({k: c.hyper[k] for k in ("temperature", "gamma", "tau")})
    return common.add_sweep(c)


def _kept(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if not k.startswith("agent.") or k.split(".", 1)[1] in KEPT}


CPU = _kept(rfm_configs.CPU)  # the same sizes as RFM's presets
SMOKE = _kept(rfm_configs.SMOKE)

cpu = common.preset(reference, CPU)
smoke = common.preset(reference, SMOKE)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return common.choose(arg, {"reference": reference, "cpu": cpu, "smoke": smoke})


def agent_kwargs(config) -> dict:
    """``make_qvpo`` keyword arguments of ``config.agent`` (a chunk of 0 means None, unset "auto")."""
    kwargs = dict(config.agent)
    kwargs["critic_hidden"] = tuple(kwargs["critic_hidden"])
    return kwargs
