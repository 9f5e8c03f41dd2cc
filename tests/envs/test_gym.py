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


@pytest.mark.parametrize("task, words", [
    ("gym:user_envs:OldApi", "reset() returned a numpy.ndarray, not (obs, info): it follows the old Gym API"),
    ("gym:user_envs:OldStep", "step() returns 4 values (obs, reward, done, info): it follows the old Gym API"),
    ("gym:user_envs:Unseeded", "Gymnasium's env checker: AssertionError: Expects the random number generator"),
    ("gym:user_envs:WrongShape", "reset() returned an observation of shape (3,) where its observation_space "
                                 "declares (2,)"),
])
def test_gymnasiums_env_checker_refuses_a_users_env_in_one_line(task, words):
    with pytest.raises(ValueError) as info:
        envs.check_task(task, {"max_episode_steps": 5})
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_the_env_checker_lets_observations_outside_the_box_bounds_through():
    """Gymnasium's check_env asserts that the first observation lies in the space; rfm_jax allows
    values outside the bounds (or float64 for a float32 Box), and still checks the step API."""
    envs.check_task("gym:user_envs:OutOfBounds", {"max_episode_steps": 5})
    with pytest.raises(ValueError, match="step\\(\\) returns 4 values"):
        envs.check_task("gym:user_envs:OutOfBoundsOldStep", {"max_episode_steps": 5})


@pytest.mark.parametrize("space, obs, words", [
    (gymnasium.spaces.Box(-1, 1, (3,)), np.zeros(6), "of shape (6,) where its observation_space declares (3,)"),
    (gymnasium.spaces.Box(-1, 1, (3,)), np.array(["a", "b", "c"]), "dtype <U1, which does not convert"),
    (gymnasium.spaces.Box(-1, 1, (3,)), [0.0, 1.0, 2.0], None),
    (gymnasium.spaces.Dict({"x": gymnasium.spaces.Box(-1, 1, (2,))}), {"y": np.zeros(2)}, "keys ['x']"),
    (gymnasium.spaces.Dict({"x": gymnasium.spaces.Box(-1, 1, (2,))}), {"x": np.zeros(3)}, "observation['x'] of shape"),
    (gymnasium.spaces.Tuple([gymnasium.spaces.Box(-1, 1, (2,))] * 2), (np.zeros(2),), "not a sequence of 2"),
])
def test_observations_are_checked_against_the_declared_space(space, obs, words):
    from rfm_jax.envs.gym import observation_problem

    why = observation_problem(space, obs)
    assert (why is None) if words is None else (words in why), why


def _failure(env, steps):
    with pytest.raises(envs.EnvFailure) as info:
        for _ in range(steps):
            env.step(np.zeros((1, 1, 2)))
    return info.value


def test_an_exception_in_step_becomes_one_env_failure_with_the_cause():
    env = envs.make("gym:user_envs:RaisesLater", [0], 1, env_kwargs={"max_episode_steps": 1000})
    env.reset()
    failure = _failure(env, 300)
    assert str(failure) == ("gym:user_envs:RaisesLater: env.step raised ConnectionError: the simulator server "
                            "went away") and (failure.run, failure.env) == (0, 0)
    assert isinstance(failure.__cause__, ConnectionError) and env.envs[0][0].unwrapped.calls == 250


def test_an_observation_of_another_shape_mid_run_is_an_env_failure():
    env = envs.make("gym:user_envs:GrowsLater", [0], 1, env_kwargs={"max_episode_steps": 1000})
    env.reset()
    assert "env.step returned an observation of shape (6,) where its observation_space declares (2,)" in str(
        _failure(env, 300))


def test_more_than_the_bound_of_invalid_steps_in_the_window_stops_and_the_window_resumes():
    """NanLater returns NaN observations from its 120th step: steps 120 .. 219 are 100 invalid ones
    (allowed, counted), the 101st fails; a run state saved at step 200 carries its 81 into the
    restored env, which then fails at the same step."""
    env = envs.make("gym:user_envs:NanLater", [0], 1, env_kwargs={"max_episode_steps": 1000})
    env.reset()
    for _ in range(200):
        env.step(np.zeros((1, 1, 2)))
    blob, errors = env.get_run_state(0), int(env.physics_errors[0])
    assert errors == 81 and env.invalid.count[0, 0] == 81
    failure = _failure(env, 100)
    assert failure.run == 0 and "101 of the env's last 1000 steps were invalid" in str(failure)
    assert env.physics_errors[0] == 101
    other = envs.make("gym:user_envs:NanLater", [0], 1, env_kwargs={"max_episode_steps": 1000})
    other.reset()
    other.set_run_states([blob])
    for _ in range(19):
        other.step(np.zeros((1, 1, 2)))
    assert "101 of the env's last 1000" in str(_failure(other, 1))


def test_occasional_invalid_steps_slide_out_of_the_window():
    """100 invalid steps, 900 valid ones, then 100 invalid again: never more than 100 in any 1000."""
    from rfm_jax.envs.base import InvalidWindow

    window, flags = InvalidWindow(1, 1), [True] * 100 + [False] * 900 + [True] * 100
    for invalid in flags:
        window.add(np.array([[invalid]]), "task")
    assert window.count[0, 0] == 100
    with pytest.raises(envs.EnvFailure, match="101 of"):
        window.add(np.array([[True]]), "task")


def test_a_reset_that_returns_nan_and_a_constructor_that_raises_are_env_failures():
    with pytest.raises(envs.EnvFailure, match="env.reset returned a non-finite observation"):
        envs.make("gym:user_envs:NanReset", [0], 1, env_kwargs={"max_episode_steps": 5}).reset()
    with pytest.raises(envs.EnvFailure) as info:
        envs.make("gym:user_envs:Broken", [0], 1, env_kwargs={"max_episode_steps": 5})
    assert "making the envs failed: making the env failed (RuntimeError: no simulator here)" in str(info.value)
    assert isinstance(info.value.__cause__.__cause__, RuntimeError)
