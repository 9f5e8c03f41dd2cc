"""RFM with a diffusion policy (docs/method.md section 8, the unification the paper points to): a
cosine-VP epsilon network regressed onto the optimal control-variate estimate of mu0 = E[X0 | x_t].
``--config=experiments/configs/rfm_diffusion.py:ARG`` with ARG as in ``configs/rfm.py`` (TASK, cpu[,TASK],
smoke[,TASK]).  It is ``rfm.py`` with ``agent.policy=diffusion``, so every RFM field applies.
"""

from configs import common
from configs import rfm as rfm_configs


def reference(task: str = "cheetah-run"):
    c = rfm_configs.reference(task)
    c.agent.policy = "diffusion"  # epsilon network on the diffusion_schedule path, DDIM sampler
    return c


CPU = dict(rfm_configs.CPU)  # the same sizes as RFM's presets
SMOKE = dict(rfm_configs.SMOKE)

cpu = common.preset(reference, CPU)
smoke = common.preset(reference, SMOKE)


def get_config(arg: str | None = None):
    return common.choose(arg, {"reference": reference, "cpu": cpu, "smoke": smoke})


agent_kwargs = rfm_configs.agent_kwargs
