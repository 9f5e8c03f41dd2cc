"""The pinned simulator stack works: dm_control loads and steps a suite task (mujoco 4 breaks this),
and so do Gymnasium's MuJoCo envs."""

import numpy as np


def test_dm_control_suite_loads_and_steps():
    from dm_control import suite

    env = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
    spec = env.action_spec()
    env.reset()
    step = env.step(np.zeros(spec.shape))
    assert np.isfinite(step.reward) and step.discount == 1.0
    assert set(step.observation) == {"position", "velocity"}


def test_the_gym_mujoco_envs_load_and_step_with_the_same_mujoco():
    """pip install -e . brings gymnasium[mujoco]; its five benchmark envs run on the pinned mujoco."""
    import gymnasium

    for name in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5"):
        env = gymnasium.make(name)
        env.reset(seed=0)
        obs, reward, *_ = env.step(env.action_space.sample())
        assert np.all(np.isfinite(obs)) and np.isfinite(reward), name
        env.close()
