"""The dm_control adapter: spec, action rescale, time-limit discount, terminals, physics errors,
seeding and exact state round trips; rendering (backend choice, MP4 recorder)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from dm_control.rl import control
from dm_env import StepType, TimeStep

from rfm_jax import envs


def test_spec_of_cartpole_and_paper_tasks_are_known():
    assert envs.spec("cartpole-swingup") == envs.EnvSpec(obs_dim=5, action_dim=1, episode_length=1000)
    assert set(envs.PAPER_TASKS) <= set(envs.TASKS)
    assert "finger-turn_hard" in envs.TASKS


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="cheetah-run") as info:
        envs.spec("cheetah-sprint")
    assert "cheetah-sprint" in str(info.value) and "walker-walk" in str(info.value)


def test_observations_are_flat_float32_and_seeding_is_deterministic():
    a = envs.BatchedEnv("cartpole-swingup", [0, 1], 2)
    b = envs.BatchedEnv("cartpole-swingup", [0, 1], 2)
    obs_a, obs_b = a.reset(), b.reset()
    assert obs_a.shape == (2, 2, 5) and obs_a.dtype == np.float32
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.allclose(obs_a[0, 0], obs_a[1, 0]) and not np.allclose(obs_a[0, 0], obs_a[0, 1])
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 2, 1))
    np.testing.assert_array_equal(a.step(actions).next_obs, b.step(actions).next_obs)


def test_action_rescale_maps_unit_box_to_spec_bounds():
    env = envs.BatchedEnv("cartpole-swingup", [0], 1)
    env.low, env.high = np.array([-2.0, 0.0]), np.array([2.0, 10.0])
    np.testing.assert_allclose(env.rescale(np.array([-1.0, -1.0])), [-2.0, 0.0])
    np.testing.assert_allclose(env.rescale(np.array([1.0, 1.0])), [2.0, 10.0])
    np.testing.assert_allclose(env.rescale(np.array([0.0, 0.5])), [0.0, 7.5])
    np.testing.assert_allclose(env.rescale(np.array([3.0, -7.0])), [2.0, 0.0])  # clipped


def test_time_limit_keeps_discount_and_true_next_obs():
    env = envs.BatchedEnv("cartpole-swingup", [3], 1)
    env.reset()
    zeros = np.zeros((1, 1, 1))
    for i in range(1000):
        result = env.step(zeros)
        if i < 999:
            assert not result.done.any() and result.discount[0, 0] == 1.0
    assert result.done[0, 0] and result.valid[0, 0]
    assert result.discount[0, 0] == 1.0  # the last transition of a time-limited episode bootstraps
    assert not np.allclose(result.next_obs, result.obs)  # obs is the next episode's first observation
    assert np.isfinite(result.episode_return[0, 0]) and result.episode_return[0, 0] >= 0


class _ScriptedEnv:
    """Stands in for one dm_control env: a terminal (discount 0) or a physics error on step."""

    def __init__(self, mode):
        self.mode, self.resets = mode, 0

    def reset(self):
        self.resets += 1
        return TimeStep(StepType.FIRST, None, None, {"x": np.array([float(self.resets)])})

    def step(self, action):
        if self.mode == "diverge":
            raise control.PhysicsError("diverged")
        return TimeStep(StepType.LAST, 2.0, 0.0, {"x": np.array([-1.0])})


def _scripted(modes):
    env = envs.BatchedEnv("cartpole-swingup", [0], len(modes))
    env.envs = [[_ScriptedEnv(m) for m in modes]]
    env.obs = np.zeros((1, len(modes), 1), np.float32)
    return env


def test_true_terminal_has_discount_zero():
    env = _scripted(["terminal"])
    result = env.step(np.zeros((1, 1, 1)))
    assert result.done[0, 0] and result.valid[0, 0] and result.discount[0, 0] == 0.0
    assert result.reward[0, 0] == 2.0 and result.next_obs[0, 0, 0] == -1.0 and result.obs[0, 0, 0] == 1.0


def test_physics_error_resets_counts_and_invalidates():
    env = _scripted(["diverge", "terminal"])
    result = env.step(np.zeros((1, 2, 1)))
    assert result.valid.tolist() == [[False, True]]
    assert env.physics_errors.tolist() == [1]
    assert result.obs[0, 0, 0] == 1.0 and np.isnan(result.episode_return[0, 0])


def test_state_round_trip_continues_identically():
    env = envs.BatchedEnv("walker-walk", [0], 1)
    env.reset()
    rng = np.random.default_rng(1)
    for _ in range(20):
        env.step(rng.uniform(-1, 1, (1, 1, 6)))
    blob = env.get_state()
    actions = rng.uniform(-1, 1, (5, 1, 1, 6))
    first = [env.step(a).next_obs for a in actions]
    other = envs.BatchedEnv("walker-walk", [9], 1)
    other.set_state(blob)
    np.testing.assert_array_equal(first, [other.step(a).next_obs for a in actions])


def test_step_checks_action_shape():
    env = envs.BatchedEnv("cartpole-swingup", [0], 1)
    env.reset()
    with pytest.raises(ValueError, match=r"\(1, 1, 1\)"):
        env.step(np.zeros((1, 1)))


def test_recorder_films_an_env_where_a_renderer_exists(tmp_path):
    """In a fresh process without MUJOCO_GL, rfm_jax picks EGL (else OSMesa) before dm_control loads,
    and a Recorder writes an MP4 of the frames it rendered."""
    code = f"""
import rfm_jax.envs as envs
if envs.GL_BACKEND["value"] == "disable":
    print("NO_RENDERER", envs.GL_BACKEND["failures"])
    raise SystemExit
env = envs.BatchedEnv("cartpole-swingup", [0], 1)
env.reset()
recorder = envs.Recorder({str(tmp_path / "clip.mp4")!r}, {{"on": True}}, height=48, width=64, frame_every=2)
for _ in range(10):
    recorder.add(env.envs[0][0])
    env.step([[[0.5]]])
print("WROTE", recorder.close(), envs.GL_BACKEND["value"])
"""
    environment = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environment)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if proc.stdout.startswith("NO_RENDERER"):
        pytest.skip(f"no EGL or OSMesa here: {proc.stdout.strip()}")
    assert "WROTE" in proc.stdout and ("egl" in proc.stdout or "osmesa" in proc.stdout), proc.stdout
    import imageio.v2 as imageio

    frames = list(imageio.get_reader(tmp_path / "clip.mp4").iter_data())  # list(reader) asks len(): inf
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and frames[0].std() > 1.0  # not a blank image


def test_a_user_set_mujoco_gl_is_kept():
    """MUJOCO_GL from the user wins (the tests run with MUJOCO_GL=disable)."""
    import rfm_jax.envs as envs

    assert envs.GL_BACKEND["chosen_by"] == "user" and envs.GL_BACKEND["value"] == os.environ["MUJOCO_GL"]
