"""QNE (MaxEntDP) presets (docs/method.md section 8): RFM's agent with a cosine-VP diffusion policy and
the eta = 0 estimator.  ``--config=experiments/configs/qne.py:ARG`` where ARG is

    TASK            QNE's reference settings on a DMC task, e.g. cheetah-run
    cpu[,TASK]      the RFM cpu preset's sizes on cartpole-swingup (2-core CPU)
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

The defaults are ``rfm_jax.agents.qne.SPEC`` (RFM's, with QNE's own).  Hyper fields can be swept in
one program, e.g. ``--config.sweep.temperature=0.01,0.02``.
"""

from configs import common, rfm

CPU = common.for_agent("qne", rfm.CPU)  # the same sizes as RFM's presets
SMOKE = common.for_agent("qne", rfm.SMOKE)
# QNE (eta = 0, DDIM from alpha(t_min) = 0.016) with its clean-latent clip: 0.044-0.058 over 8 seeds.
# Without the clip one DDIM step turns an epsilon error d into a latent error of 64 d, the samples
# saturate and the training diverges late on some seeds (0.55 and 0.82 of 5, measured).
PROBE = {**common.for_agent("qne", rfm.PROBE), "agent.num_eval_particles": 32}
PROBE_TOLERANCE = 0.15

get_config = common.presets("qne", cpu=CPU, smoke=SMOKE)
