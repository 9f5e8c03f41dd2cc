"""QNE (MaxEntDP) configs (docs/method.md section 8): RFM's agent with a cosine-VP diffusion policy and
the eta = 0 estimator.  ``--config=experiments/configs/qne.py:ARG`` where ARG is

    TASK            QNE's reference settings on a DMC task, e.g. cheetah-run
    cpu[,TASK]      the RFM cpu preset's sizes on cartpole-swingup (2-core CPU)
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

Hyper fields can be swept in one program, e.g. ``--config.sweep.temperature=0.01,0.02``.
"""

from configs import common
from configs import rfm as rfm_configs
from ml_collections import config_dict

from rfm_jax.agents.base import U_MAX
from rfm_jax.agents.qne import FIXED


def reference(task: str = "cheetah-run") -> config_dict.ConfigDict:
    c = rfm_configs.reference(task)
    c.algo = "qne"  # agent in rfm_jax.agents.REGISTRY
    c.agent = config_dict.ConfigDict({k: v for k, v in c.agent.items() if k not in FIXED})
    c.agent.num_ode_steps = 20  # DDIM steps from t_min to 1 - t_min (QNE: 20)
    c.agent.x1_bound = U_MAX  # the DDIM's clean latent clipped to |tanh u| <= 0.999 (the reference clips to [-1, 1])
    c.hyper = config_dict.ConfigDict({k: v for k, v in c.hyper.items() if k not in ("ridge", "clip", "eta")})
    return common.add_sweep(c)


CPU = dict(rfm_configs.CPU)  # the same sizes as RFM's presets
SMOKE = dict(rfm_configs.SMOKE)

cpu = common.preset(reference, CPU)
smoke = common.preset(reference, SMOKE)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return common.choose(arg, {"reference": reference, "cpu": cpu, "smoke": smoke})


agent_kwargs = rfm_configs.agent_kwargs  # the same fields, less the fixed ones
