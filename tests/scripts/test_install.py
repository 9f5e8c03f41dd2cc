"""The pinned simulator stack works: dm_control loads and steps a suite task (mujoco 4 breaks this)."""

import numpy as np


def test_dm_control_suite_loads_and_steps():
    from dm_control import suite

    env = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
    spec = env.action_spec()
    env.reset()
    step = env.step(np.zeros(spec.shape))
    assert np.isfinite(step.reward) and step.discount == 1.0
    assert set(step.observation) == {"position", "velocity"}
