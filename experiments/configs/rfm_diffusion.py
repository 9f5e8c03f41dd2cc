"""RFM with a diffusion policy (docs/method.md section 8, the unification the paper points to): a
cosine-VP epsilon network regressed onto the optimal control-variate estimate of mu0 = E[X0 | x_t].
``--config=experiments/configs/rfm_diffusion.py:ARG`` with ARG as in ``configs/rfm.py`` (TASK, cpu[,TASK],
smoke[,TASK]).  It is ``rfm.py`` with ``agent.policy=diffusion``, so every RFM field applies.
"""

from configs import common, rfm

DIFFUSION = {"agent.policy": "diffusion"}  # epsilon network on the diffusion_schedule path, DDIM sampler

get_config = common.presets("rfm", {**rfm.PAPER, **DIFFUSION}, cpu={**rfm.CPU, **DIFFUSION},
                             smoke={**rfm.SMOKE, **DIFFUSION})
