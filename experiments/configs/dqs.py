"""DQS configs (docs/method.md section 8): RFM's agent with a VE diffusion policy, a score network
(s = -eps / sigma) and the eta = 1 estimator.  ``--config=experiments/configs/dqs.py:ARG`` where ARG is

    TASK            DQS's reference settings on a DMC task (lambda 0.05, 1000 posterior particles, 20 steps)
    cpu[,TASK]      the RFM cpu preset's sizes on cartpole-swingup (2-core CPU)
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

Hyper fields can be swept in one program, e.g. ``--config.sweep.temperature=0.02,0.05``.
"""

from configs import common
from configs import rfm as rfm_configs
from ml_collections import config_dict

from rfm_jax.agents.dqs import FIXED


def reference(task: str = "cheetah-run") -> config_dict.ConfigDict:
    c = rfm_configs.reference(task)
    c.algo = "dqs"  # agent in rfm_jax.agents.REGISTRY
    c.agent = config_dict.ConfigDict({k: v for k, v in c.agent.items() if k not in FIXED})
    c.agent.num_ode_steps = 20  # DDIM steps from t_min to 1 - t_min (DQS: 20)
    c.agent.num_posterior_particles = 1000  # particles of the gradient expectation (DQS: 1000)
    c.hyper = config_dict.ConfigDict({k: v for k, v in c.hyper.items() if k not in ("ridge", "clip", "eta")})
    c.hyper.temperature = 0.05  # lambda of the Boltzmann target (DQS: 0.05)
    return common.add_sweep(c)


# RFM's preset sizes, except 10 DDIM steps: the VE path's sigma falls geometrically from 0.89 to 1e-5,
# and on the bandit probe (tests/test_probe.py) 4 steps missed the optimum by 0.28 against 0.07 with 8.
CPU = {**rfm_configs.CPU, "agent.num_ode_steps": 10}
SMOKE = dict(rfm_configs.SMOKE)

cpu = common.preset(reference, CPU)
smoke = common.preset(reference, SMOKE)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return common.choose(arg, {"reference": reference, "cpu": cpu, "smoke": smoke})


agent_kwargs = rfm_configs.agent_kwargs  # the same fields, less the fixed ones
