"""The Gymnasium backend on real Gymnasium MuJoCo envs and on env classes of a user's module
(``user_envs``): terminals, truncations, action mapping, flattening, refusals, seeding, evaluation
and exact state round trips."""

import logging

import gymnasium
import numpy as np
import pytest

from rfm_jax import envs


def _twin(task_id, seed, **kwargs):
    """A plain Gymnasium env seeded as rfm_jax seeds env (seed, 0) of the training stream."""
    env = gymnasium.make(task_id, **kwargs)
    first, _ = env.reset(seed=envs.env_seed(seed, 0, 0))
    return env, first


def test_a_terminal_stores_discount_zero_and_the_true_final_observation():
    """Hopper-v5 falls under random actions: the terminal step has discount 0 and the observation
    Gymnasium returned; the next observation to act on is the new episode's first one."""
    env = envs.make("gym:Hopper-v5", [3], 1)
    twin, first = _twin("Hopper-v5", 3)
    np.testing.assert_array_equal(env.reset()[0, 0], first.astype(np.float32))
    rng = np.random.default_rng(0)
    for _ in range(1000):
        action = rng.uniform(-1, 1, (1, 1, 3))
        result = env.step(action)
        obs, reward, terminated, truncated, _ = twin.step(action[0, 0].astype(np.float32))
        np.testing.assert_array_equal(result.next_obs[0, 0], obs.astype(np.float32))
        assert result.reward[0, 0] == np.float32(reward)
        if terminated:
            break
        assert result.discount[0, 0] == 1.0 and not result.done[0, 0]
    assert terminated and not truncated
    assert result.done[0, 0] and result.valid[0, 0] and result.discount[0, 0] == 0.0
    assert np.isfinite(result.episode_return[0, 0])
    new_first, _ = twin.reset()
    np.testing.assert_array_equal(result.obs[0, 0], new_first.astype(np.float32))


def test_a_truncation_keeps_discount_one_and_the_true_final_observation():
    """A 10-step time limit (env_kwargs) on Hopper-v5 standing still: the 10th transition stores
    Gymnasium's final observation with discount 1 (it bootstraps) and a new episode begins."""
    env = envs.make("gym:Hopper-v5", [0], 1, env_kwargs={"max_episode_steps": 10})
    assert envs.spec("gym:Hopper-v5", {"max_episode_steps": 10}) == envs.EnvSpec(11, 3, 10)
    twin, _ = _twin("Hopper-v5", 0, max_episode_steps=10)
    env.reset()
    zeros = np.zeros((1, 1, 3))
    for i in range(10):
        result = env.step(zeros)
        obs, _, terminated, truncated, _ = twin.step(np.zeros(3, np.float32))
        assert not terminated and truncated == (i == 9)
    assert result.done[0, 0] and result.valid[0, 0] and result.discount[0, 0] == 1.0
    np.testing.assert_array_equal(result.next_obs[0, 0], obs.astype(np.float32))
    assert not np.allclose(result.obs[0, 0], result.next_obs[0, 0])  # the next episode's first observation


def test_actions_map_to_the_box_and_dict_observations_flatten():
    import user_envs  # noqa: F401 - tests/envs on sys.path

    env = envs.make("gym:user_envs:Recording", [0], 1, env_kwargs={"max_episode_steps": 5})
    assert envs.spec("gym:user_envs:Recording", {"max_episode_steps": 5}) == envs.EnvSpec(5, 2, 5)
    obs = env.reset()
    assert obs.shape == (1, 1, 5) and obs.dtype == np.float32
    result = env.step(np.array([[[-1.0, 1.0]]]))
    env.step(np.array([[[0.5, -3.0]]]))  # clipped to [-1, 1] first
    recorded = env.envs[0][0].unwrapped.actions
    np.testing.assert_allclose(recorded[0], [-2.0, 10.0])
    np.testing.assert_allclose(recorded[1], [1.0, 0.0])
    assert recorded[0].dtype == np.float32
    np.testing.assert_array_equal(result.next_obs[0, 0], [1, 1, 2, 2, 2])  # Dict keys in order: position, velocity


@pytest.mark.parametrize("task, kwargs, words", [
    ("gym:CartPole-v1", {}, "action space Discrete(2) is not supported"),
    ("gym:user_envs:UnboundedAction", {"max_episode_steps": 5}, "is unbounded"),
    ("gym:user_envs:Pixels", {"max_episode_steps": 5}, "image observations are not supported"),
    ("gym:user_envs:DiscreteInDict", {"max_episode_steps": 5}, "observation['mode'] space Discrete(3)"),
    ("gym:user_envs:Reach", {}, "has no time limit"),
    ("gym:user_envs:Reach", {"max_episode_steps": 5, "sped": 1}, "bad config.env_kwargs"),
    ("gym:user_envs:Missing", {}, "defines no class 'Missing'"),
    ("gym:user_envs:FloatPixels", {"max_episode_steps": 5}, "image observations are not supported"),
    ("gym:user_envs:Broken", {"max_episode_steps": 5}, "making the env failed (RuntimeError: no simulator here)"),
    ("gym:no_such_module:Env", {}, "cannot import module 'no_such_module' (ModuleNotFoundError"),
    ("gym:Hoper-v5", {}, "did you mean gym:Hopper-v5"),
    ("cartpole-swingup", {"x": 1}, "applies to gym: tasks only"),
])
def test_unsupported_envs_are_refused_in_one_line(task, kwargs, words):
    with pytest.raises(ValueError) as info:
        envs.check_task(task, kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_seeding_is_deterministic_per_run_env_and_stream():
    a, b = envs.make("gym:Hopper-v5", [0, 1], 2), envs.make("gym:Hopper-v5", [0, 1], 2)
    obs = a.reset()
    np.testing.assert_array_equal(obs, b.reset())
    assert len({obs[s, e].tobytes() for s in range(2) for e in range(2)}) == 4
    assert not np.array_equal(obs, envs.make("gym:Hopper-v5", [0, 1], 2, stream=1).reset())
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 2, 2, 3))
    for action in actions:  # through terminations and resets
        np.testing.assert_array_equal(a.step(action).obs, b.step(action).obs)


def test_a_state_round_trip_continues_mid_episode_exactly():
    """Gymnasium's MuJoCo envs pickle only their constructor arguments (EzPickle); the backend saves
    their physics, generator and wrapper counters, so a restored env continues bit for bit."""
    env = envs.make("gym:Walker2d-v5", [0, 1], 1)
    env.reset()
    rng = np.random.default_rng(1)
    for _ in range(15):
        env.step(rng.uniform(-1, 1, (2, 1, 6)))
    blobs = [env.get_run_state(s) for s in range(2)]
    other = envs.make("gym:Walker2d-v5", [7, 8], 1)
    other.reset()
    other.set_run_states(blobs)
    np.testing.assert_array_equal(other.obs, env.obs)
    for action in rng.uniform(-1, 1, (300, 2, 1, 6)):  # past terminations and resets
        mine, theirs = env.step(action), other.step(action)
        for field in ("next_obs", "reward", "discount", "obs", "done"):
            np.testing.assert_array_equal(getattr(mine, field), getattr(theirs, field), field)


def test_an_env_that_does_not_pickle_is_named_once_and_resumes_fresh(caplog):
    env = envs.make("gym:user_envs:Locked", [0, 1], 1, env_kwargs={"max_episode_steps": 20})
    env.reset()
    env.step(np.zeros((2, 1, 2)))
    with caplog.at_level(logging.WARNING, logger="rfm_jax.envs.gym"):
        assert env.get_run_state(0) is None and env.get_run_state(1) is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "gym:user_envs:Locked cannot be saved" in messages[0] and "fresh" in messages[0]
    fresh = envs.make("gym:user_envs:Locked", [0, 1], 1, env_kwargs={"max_episode_steps": 20})
    first = fresh.reset().copy()
    fresh.set_run_states([None, None])
    np.testing.assert_array_equal(fresh.obs, first)


def test_evaluation_counts_each_episode_once_and_keeps_both_modes():
    """Hopper-v5 episodes end at different steps; every slot counts its first episode, fixed
    evaluations repeat, fresh ones differ, and the loop ends with the last episode."""
    from rfm_jax.agents import make_agent
    from rfm_jax.training.evaluation import evaluate
    from rfm_jax.training.program import compile_seeds, make_step_fns
    from rfm_jax.training.sweeps import expand, hyper_per_run, run_keys

    spec = envs.spec("gym:Hopper-v5")
    agent = make_agent("sac", obs_dim=spec.obs_dim, action_dim=spec.action_dim, actor_hidden=(8, 8),
                       critic_hidden=(8, 8))
    fns = compile_seeds(make_step_fns(agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, num_envs=1,
                                      replay_capacity=8, batch_size=2))
    runs = expand([0, 1], None)
    state = fns.init(run_keys(runs), hyper_per_run(agent.hyper, runs)).agent
    calls = []
    act = fns.eval_act
    counting = fns._replace(eval_act=lambda *a: calls.append(1) or act(*a))
    run = lambda index, mode: evaluate(counting, state, task="gym:Hopper-v5", seeds=[0, 1], episodes=3,  # noqa: E731
                                       eval_index=index, mode=mode)
    first = run(0, "fixed")
    assert first.shape == (2, 3) and np.all(np.isfinite(first))
    assert len(calls) < spec.episode_length  # a falling Hopper ends every episode early
    np.testing.assert_array_equal(first, run(4, "fixed"))
    assert not np.array_equal(run(1, "fresh"), run(2, "fresh"))
