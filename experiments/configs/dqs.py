"""DQS presets (docs/method.md section 8): RFM's agent with a VE diffusion policy, a score network
(s = -eps / sigma) and the eta = 1 estimator.  ``--config=experiments/configs/dqs.py:ARG`` where ARG is

    TASK            DQS's reference settings on a DMC task (lambda 0.05, 1000 posterior particles, 20 steps)
    cpu[,TASK]      the RFM cpu preset's sizes on cartpole-swingup (2-core CPU)
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

The defaults are ``rfm_jax.agents.dqs.SPEC`` (RFM's, with DQS's own).  Hyper fields can be swept in
one program, e.g. ``--config.sweep.temperature=0.02,0.05``.
"""

from configs import common, rfm

# RFM's preset sizes, except 10 DDIM steps: the VE path's sigma falls geometrically from 0.89 to 1e-5,
# and on the bandit probe (tests/agents/test_probe.py) 4 steps missed the optimum by 0.28 against 0.07 with 8.
CPU = {**common.for_agent("dqs", rfm.CPU), "agent.num_ode_steps": 10}
SMOKE = common.for_agent("dqs", rfm.SMOKE)
PROBE = {**common.for_agent("dqs", rfm.PROBE), "agent.num_ode_steps": 8}
PROBE_TOLERANCE = 0.15

get_config = common.presets("dqs", cpu=CPU, smoke=SMOKE)
