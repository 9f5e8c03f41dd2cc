"""The MJX backend (``mjx:`` tasks) against dm_control: initial states, observations and rewards at
the same physics states, trajectories close to MuJoCo's (C, float64) for a short horizon; the
transition semantics (time limit, auto-reset, seeding, invalid steps and their bound), exact
checkpoint round trips and the one-line refusals.

Every compiled program has one batch shape (``SHAPE``) and is shared through ``rfm_jax.envs.mjx.program``;
tests that compile (about 10-25 s per task on 2 cores) are marked slow, the refusals are not."""

import functools
import sys

import numpy as np
import pytest

pytest.importorskip("mujoco.mjx")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
from dm_control import suite  # noqa: E402

from rfm_jax import envs  # noqa: E402
from rfm_jax.envs import mjx as backend  # noqa: E402
from rfm_jax.envs.dmc import flatten_observation  # noqa: E402
from rfm_jax.envs.mjx_core import env_keys  # noqa: E402
from rfm_jax.envs.mjx_tasks import EXTRA, FISH_JOINTS  # noqa: E402

SHAPE = (1, 2)  # [S, E] of every BatchedEnv here: one compilation per task
ROLLED = {"cartpole": "cartpole-swingup", "cheetah": "cheetah-run", "fish": "fish-swim", "walker": "walker-walk"}
slow = pytest.mark.slow


def _dmc(name: str):
    domain, task = name.split("-", 1)
    return suite.load(domain, task, task_kwargs={"random": 0})


def _put(dmc, snap, ctrl=None) -> None:
    """dm_control's physics at an MJX snapshot (numpy, one env; float32 values are exact in float64),
    and the episode's task parameters (fish-swim's target)."""
    physics = dmc.physics
    if snap.extra.size:
        physics.named.model.geom_pos["target"] = snap.extra
    with physics.reset_context():
        for field in ("qpos", "qvel", "act", "qacc_warmstart"):
            getattr(physics.data, field)[:] = np.asarray(getattr(snap, field), np.float64)
    if ctrl is not None:
        physics.data.ctrl[:] = ctrl
    physics.forward()


def _env_snap(states, s: int, e: int):
    return jax.tree.map(lambda x: np.asarray(x[s, e]), states.now)


def _ctrl(env, action):
    low, high = env.core.low.astype(np.float64), env.core.high.astype(np.float64)
    return low + (np.clip(action, -1, 1) + 1) * 0.5 * (high - low)


@functools.cache
def _rollout(name: str, steps: int = 20):
    """A SHAPE env of ``mjx:name`` stepped with uniform actions: (env, first states, [(actions,
    result, states after)])."""
    env = envs.make("mjx:" + name, [0], SHAPE[1])
    env.reset()
    first = env.states
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (*SHAPE, env.action_dim))
        result = env.step(actions)
        rows.append((actions, result, env.states))
    return env, first, rows


@functools.cache
def _measure(name: str):
    """jit (qpos, qvel, ctrl, extra) -> (obs, reward) of ``name``'s port: the stages run after a step."""
    core = backend.program(name)[0]

    def fn(qpos, qvel, ctrl, extra):
        d = core._refresh(core.d0.replace(qpos=qpos, qvel=qvel, ctrl=ctrl))
        return core.port.observe(d, extra), core.port.reward(d, extra)

    return jax.jit(fn)


@slow
@pytest.mark.parametrize("name", backend.TASKS)
def test_observations_and_rewards_equal_dm_control_at_the_same_states(name):
    """At states along an MJX trajectory of the domain (every 4th step, both envs): the step's own
    next_obs and reward (the rolled-out task) and the port's observation and reward (every task)
    equal dm_control's task.get_observation / get_reward there, to float32 rounding."""
    rolled = ROLLED[name.split("-")[0]]
    env, _, rows = _rollout(rolled)
    dmc = _dmc(name)
    extra_dim = backend.program(name)[0].snapshot_shape.extra.shape[0]  # fish-upright at fish-swim's states: none
    for actions, result, states in rows[::4]:
        for e in range(SHAPE[1]):
            snap, ctrl = _env_snap(states, 0, e), _ctrl(env, actions[0, e])
            _put(dmc, snap, ctrl)
            want_obs = flatten_observation(dmc.task.get_observation(dmc.physics))
            want_reward = dmc.task.get_reward(dmc.physics)
            obs, reward = _measure(name)(snap.qpos, snap.qvel, ctrl.astype(np.float32), snap.extra[:extra_dim])
            np.testing.assert_allclose(obs, want_obs, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(reward, want_reward, rtol=1e-5, atol=1e-6)
            if name == rolled:
                np.testing.assert_allclose(result.next_obs[0, e], want_obs, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(result.reward[0, e], want_reward, rtol=1e-5, atol=1e-6)
    assert envs.spec("mjx:" + name).obs_dim == want_obs.size == obs.size


class _Drawn:
    """Stands in for a dm_control task's RandomState: returns the values MJX's init drew."""

    def __init__(self, uniform=(), normal=()):
        self.uniform_values, self.normal_values = list(uniform), list(normal)

    def uniform(self, low, high, size=None):
        if np.ndim(low):  # cheetah: every limited joint at once
            return np.asarray(self.uniform_values.pop(0))
        return self.uniform_values.pop(0)

    def randn(self, *shape):
        n = int(np.prod(shape)) if shape else 1
        values, self.normal_values = self.normal_values[:n], self.normal_values[n:]
        return np.asarray(values).reshape(shape) if shape else values[0]


def _drawn(name: str, qpos, qvel, extra, model):
    """dm_control's draws that give ``qpos``, ``qvel`` (and ``extra``) in its ``initialize_episode``."""
    if name.startswith("cartpole"):
        return _Drawn(normal=[qpos[0] / 0.01, (qpos[1] - np.pi) / 0.01, *(qvel / 0.01)])
    if name.startswith("fish"):
        joints = [qpos[model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j)]] for j in FISH_JOINTS]
        return _Drawn(normal=qpos[3:7], uniform=[*joints, *extra])
    limited = model.jnt_limited.astype(bool)
    if name.startswith("cheetah"):
        return _Drawn(uniform=[qpos[model.jnt_qposadr[limited]]])
    randomized = [j for j in range(model.njnt) if limited[j] or model.jnt_type[j] == 3]  # walker
    return _Drawn(uniform=[qpos[model.jnt_qposadr[j]] for j in randomized])


@slow
@pytest.mark.parametrize("name", sorted(ROLLED.values()))
def test_initial_states_follow_dm_control(name):
    """dm_control's ``initialize_episode`` fed the values MJX drew gives MJX's first state (cheetah:
    after its 200 settling steps, MJX float32 against MuJoCo float64)."""
    env, first, _ = _rollout(name)
    core, dmc = env.core, _dmc(name)
    for e in range(SHAPE[1]):
        sub = jax.random.split(jnp.asarray(env.keys[0, e]))[1]  # the first refill's key: the first episode
        qpos, qvel, extra = (np.asarray(x, np.float64) for x in core.port.init(sub))
        dmc.task._random = _drawn(name, qpos, qvel, extra, core.port.model)
        timestep = dmc.reset()
        snap = _env_snap(first, 0, e)
        tol = 1e-4 if name.startswith("cheetah") else 1e-6
        np.testing.assert_allclose(snap.qpos, dmc.physics.data.qpos, atol=tol)
        np.testing.assert_allclose(snap.qvel, dmc.physics.data.qvel, atol=tol)
        np.testing.assert_allclose(snap.obs, flatten_observation(timestep.observation), atol=tol)
        if snap.extra.size:  # fish-swim's target
            np.testing.assert_allclose(snap.extra, dmc.physics.named.model.geom_pos["target"], atol=1e-7)


@slow
@pytest.mark.parametrize("name", sorted(ROLLED.values()))
def test_trajectories_stay_close_to_mujoco_for_a_short_horizon(name):
    """From the same first state and under the same actions, MJX's qpos and qvel stay within 1e-3
    of dm_control's for 20 env steps (cartpole, cheetah and fish within 1e-4).  MJX runs in float32
    (MuJoCo in float64), and its Newton solver cannot reach MuJoCo's tolerance of 1e-8 in float32,
    so contact forces differ at about 1e-5 of their size; contacts (walker's falls, cheetah's feet)
    then amplify the difference: measured 1e-7 (cartpole), 2e-6 (fish) and 2e-5 (cheetah, walker)
    after 20 steps; walker's random falls drift apart within about 50 steps, as any two round-offs would."""
    env, first, rows = _rollout(name)
    dmc = _dmc(name)
    _put(dmc, _env_snap(first, 0, 0))
    dmc._reset_next_step, dmc._step_count = False, 0
    tol = 1e-3 if name.startswith("walker") else 1e-4
    for actions, result, states in rows:
        timestep = dmc.step(_ctrl(env, actions[0, 0]))
        snap = _env_snap(states, 0, 0)
        np.testing.assert_allclose(snap.qpos, dmc.physics.data.qpos, atol=tol)
        np.testing.assert_allclose(snap.qvel, dmc.physics.data.qvel, atol=tol)
        np.testing.assert_allclose(result.reward[0, 0], timestep.reward, atol=tol)


def _cartpole(seed: int = 0, stream: int = 0):
    env = envs.make("mjx:cartpole-swingup", [seed], SHAPE[1], stream=stream)
    env.reset()
    return env


@slow
def test_time_limit_stores_the_true_final_observation_and_starts_a_fresh_episode():
    env, dmc = _cartpole(3), _dmc("cartpole-swingup")
    first_obs, zeros, rewards = env.obs.copy(), np.zeros((*SHAPE, 1)), []
    for _ in range(999):
        result = env.step(zeros)
        rewards.append(result.reward[0, 0])
        assert not result.done.any() and (result.discount == 1).all() and result.valid.all()
    before, spare = _env_snap(env.states, 0, 0), np.asarray(env.states.spare.obs[0, 0])
    result = env.step(zeros)
    assert result.done.all() and result.valid.all() and (result.discount == 1).all()
    _put(dmc, before)  # the final transition by hand: dm_control stepped from the state before it
    dmc._reset_next_step, dmc._step_count = False, 0
    np.testing.assert_allclose(result.next_obs[0, 0], flatten_observation(dmc.step([0.0]).observation), atol=1e-5)
    np.testing.assert_array_equal(result.obs[0, 0], spare)  # the next episode's first observation
    assert not np.allclose(result.obs, result.next_obs) and not np.allclose(result.obs, first_obs)
    np.testing.assert_allclose(result.episode_return[0, 0], np.sum(rewards) + result.reward[0, 0], rtol=1e-5)
    assert (np.asarray(env.states.t) == 0).all() and not np.asarray(env.states.stale).any()
    assert not np.allclose(env.states.spare.obs[0, 0], spare)  # a fresh spare was drawn


@slow
def test_seeding_is_deterministic_per_seed_env_and_stream():
    a, b = _cartpole(0), _cartpole(0)
    np.testing.assert_array_equal(a.obs, b.obs)
    assert not np.allclose(a.obs[0, 0], a.obs[0, 1])  # envs of a run differ
    assert not np.allclose(a.obs, _cartpole(1).obs) and not np.allclose(a.obs, _cartpole(0, stream=1).obs)
    np.testing.assert_array_equal(a.keys[0, 1], jax.random.PRNGKey(envs.env_seed(0, 1, 0)))
    np.testing.assert_array_equal(env_keys([5, 0], 2, 0)[1], a.keys[0])  # a function of (seed, env, stream) only
    actions = np.random.default_rng(0).uniform(-1, 1, (*SHAPE, 1))
    np.testing.assert_array_equal(a.step(actions).next_obs, b.step(actions).next_obs)


def _poison(env, e: int = 0) -> None:
    """Make env (0, e)'s state non-finite, as a diverged simulation leaves it."""
    env.states = env.states._replace(now=env.states.now._replace(qvel=env.states.now.qvel.at[0, e].set(jnp.nan)))


@slow
def test_a_non_finite_state_is_an_invalid_step_that_resets_and_is_counted():
    env = _cartpole()
    for _ in range(3):
        env.step(np.zeros((*SHAPE, 1)))
    last, spare = env.obs.copy(), np.asarray(env.states.spare.obs[0, 0])
    _poison(env)
    result = env.step(np.zeros((*SHAPE, 1)))
    assert result.valid.tolist() == [[False, True]] and result.done.tolist() == [[True, False]]
    assert env.physics_errors.tolist() == [1] and result.reward[0, 0] == 0 and result.discount[0, 0] == 0
    np.testing.assert_array_equal(result.next_obs[0, 0], last[0, 0])  # no transition
    np.testing.assert_array_equal(result.obs[0, 0], spare)  # a new episode
    assert np.isnan(result.episode_return).all() and int(env.states.t[0, 0]) == 0 and int(env.states.t[0, 1]) == 4
    assert np.isfinite(env.states.now.qvel).all()


@slow
def test_more_invalid_steps_than_the_bound_stop_the_run():
    env = _cartpole()
    for _ in range(envs.INVALID_LIMIT):
        _poison(env)
        env.step(np.zeros((*SHAPE, 1)))
    _poison(env)
    with pytest.raises(envs.EnvFailure, match="101 of the env's last 1000 steps were invalid") as info:
        env.step(np.zeros((*SHAPE, 1)))
    assert (info.value.run, info.value.env) == (0, 0)


@slow
def test_run_state_round_trip_continues_bit_for_bit():
    """Saved 5 steps before the time limit, restored into fresh envs: the next 10 steps (an episode
    end, refills and a counted invalid step among them) equal the uninterrupted env's."""
    env, rng = _cartpole(2), np.random.default_rng(4)
    env.states = env.states._replace(t=env.states.t + 990)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, (*SHAPE, 1)))
    _poison(env, 1)
    env.step(np.zeros((*SHAPE, 1)))
    blobs = [env.get_run_state(0)]
    actions = rng.uniform(-1, 1, (10, *SHAPE, 1))
    first = [env.step(a) for a in actions]
    other = _cartpole(9)
    assert other.set_run_states(blobs) == [True]
    assert other.physics_errors.tolist() == [1]
    second = [other.step(a) for a in actions]
    assert any(r.done.any() for r in first)
    for x, y in zip(first, second, strict=True):
        for a, b in zip(x, y, strict=True):
            np.testing.assert_array_equal(a, b)
    jax.tree.map(np.testing.assert_array_equal, env.states, other.states)


@slow
def test_the_one_program_step_batch_equals_the_host_wrapper():
    """``Core.reset_batch`` and ``Core.step_batch`` (an on-device loop's: step and refill under one
    cond) give the host wrapper's states and results, across an episode end."""
    env, rng = _cartpole(6), np.random.default_rng(6)
    core = env.core
    states = jax.jit(core.reset_batch)(jnp.asarray(env.keys))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), states, env.states)
    env.states = states = jax.tree.map(jnp.asarray, env.states._replace(t=env.states.t + 997))
    step_batch, ended = jax.jit(core.step_batch), []
    for _ in range(5):
        actions = rng.uniform(-1, 1, (*SHAPE, 1)).astype(np.float32)
        states, out = step_batch(states, actions)
        want = env.step(actions)
        for a, b in zip(out, want, strict=True):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)
        ended.append(want.done.all())
    assert ended == [False, False, True, False, False]  # the time limit in between
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), states, env.states)


def test_unknown_task_and_bad_arguments_are_refused_in_one_line():
    with pytest.raises(ValueError, match="Unknown mjx: task 'cheetah-sprint'") as info:
        envs.check_task("mjx:cheetah-sprint")
    assert "mjx:cartpole-swingup" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="takes none"):
        envs.check_task("mjx:cartpole-swingup", {"time_limit": 5})
    with pytest.raises(ValueError, match="video is not supported"):
        backend.BatchedEnv("cartpole-swingup", [0], 1, render=True)
    for name, why in backend.REFUSED.items():
        with pytest.raises(ValueError, match="is not supported") as info:
            envs.check_task("mjx:" + name)
        assert why in str(info.value)


def test_tasks_without_the_mjx_extra_are_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco.mjx", None)
    monkeypatch.delattr(mujoco, "mjx", raising=False)
    with pytest.raises(ValueError) as info:
        envs.check_task("mjx:cartpole-swingup")
    assert str(info.value) == EXTRA == "mjx: tasks need the mjx extra: pip install -e '.[mjx]' -c constraints.txt"


@pytest.mark.parametrize("name", backend.TASKS)
def test_spec_equals_dm_control(name):
    assert envs.spec("mjx:" + name) == envs.spec(name)
    assert envs.spec("mjx:" + name).episode_length == 1000


def test_video_with_an_mjx_task_is_refused_by_the_run_config():
    from rfm_jax.training.run_config import RunConfig, RunConfigError

    with pytest.raises(RunConfigError, match="config.video: mjx: tasks are not filmed"):
        RunConfig.for_task("mjx:cartpole-swingup", video=True)
    assert RunConfig.for_task("mjx:cartpole-swingup").task == "mjx:cartpole-swingup"
