"""The MJX backend's pure functional core: one env of a ported task as pure JAX functions, so the
host wrapper (``rfm_jax.envs.mjx.BatchedEnv``) and an on-device loop (a ``lax.scan`` over env steps,
vmapped over runs and envs) share them.

    reset(key [2] uint32) -> EnvState
    step(state, action [A] in [-1, 1]) -> (state, StepResult of one env)
    refill(state) -> state                 a fresh spare episode where the last one was used
    step_batch(states [...], actions [..., A]) -> (states, StepResult [...])   all of it, one program

An env step is ``n_sub_steps`` MJX physics steps (dm_control's control timestep / model timestep)
with ctrl = low + (clip(a, -1, 1) + 1) (high - low) / 2 held fixed, followed by the position and
velocity stages dm_control's legacy step ends with (``mj_step1``), then the task's observation and
reward.  Transitions follow ``rfm_jax.envs.base``: discount 1 (these tasks have no terminal, the
time limit bootstraps), ``next_obs`` the true observation after the action, ``obs`` the first one
of the next episode where one ended.  A step whose qpos, qvel or qacc leaves MuJoCo's bounds (|x| >
1e10 or NaN: where dm_control raises ``PhysicsError``), or whose observation or reward is not
finite, is invalid: no transition (reward and discount 0, next_obs the last observation), and the
env starts a new episode.

Auto-reset without a reset per step: a state carries ``spare``, the first state of its next
episode, computed ahead.  ``step`` swaps it in where an episode ends (a select, cheap under vmap)
and marks it ``stale``; ``refill`` draws the next one.  ``step_batch`` runs ``refill`` on the whole
batch under one ``lax.cond`` on any(stale), so the initial-state computation (cheetah's 200
settling steps) runs only in steps where an episode ended.  An on-device loop calls
``step_batch`` on its full [R, E] batch (or ``refill_batch`` after its own vmapped ``step``).

The host wrapper runs the same functions as separate programs (``Core.programs``: ``step`` each env
step, ``refill`` only after a step where an episode ended), which compiles each physics once less.

Randomness: env key k; each ``refill`` splits k into (k', sub) and draws the spare episode from sub;
``reset`` is two refills (the first episode, then its spare), so every episode's initial state is
fresh and a function of (k, its index).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax.envs.base import StepResult
from rfm_jax.envs.mjx_tasks import Port, load_mjx

MAX_VALUE = 1e10  # mjMAXVAL: MuJoCo's bound on |qpos|, |qvel|, |qacc| (larger: a divergence warning)


class Snapshot(NamedTuple):
    """A physics state that fully determines the next step (MuJoCo's integration state), the
    episode's task parameters and the observation of it."""

    qpos: jax.Array  # [nq]
    qvel: jax.Array  # [nv]
    act: jax.Array  # [na]
    qacc_warmstart: jax.Array  # [nv]
    time: jax.Array  # []
    extra: jax.Array  # [K]
    obs: jax.Array  # [O] float32


class EnvState(NamedTuple):
    now: Snapshot  # where the env is; now.obs is what to act on
    spare: Snapshot  # the first state of the next episode
    t: jax.Array  # [] int32, env steps in this episode
    ret: jax.Array  # [] float32, return so far
    key: jax.Array  # [2] uint32, for the episodes after the spare
    stale: jax.Array  # [] bool: spare was used, refill draws a new one


class Core:
    """The pure functions of one ported task (``Port``) on its MJX model."""

    def __init__(self, port: Port):
        mjx = load_mjx()
        self.port = port
        self.mx = mjx.put_model(port.model)
        self.d0 = mjx.make_data(self.mx)
        limited = port.model.actuator_ctrllimited.astype(bool)
        self.low = np.where(limited, port.model.actuator_ctrlrange[:, 0], -MAX_VALUE).astype(np.float32)
        self.high = np.where(limited, port.model.actuator_ctrlrange[:, 1], MAX_VALUE).astype(np.float32)
        self.stages = tuple(getattr(mjx, stage) for stage in port.stages)
        self.snapshot_shape = jax.eval_shape(self.first, jax.ShapeDtypeStruct((2,), jnp.uint32))

    def _data(self, snap: Snapshot, ctrl):
        return self.d0.replace(qpos=snap.qpos, qvel=snap.qvel, act=snap.act, qacc_warmstart=snap.qacc_warmstart,
                               time=snap.time, ctrl=ctrl)

    def _refresh(self, d):
        for stage in self.stages:
            d = stage(self.mx, d)
        return d

    def _snapshot(self, d, extra, obs) -> Snapshot:
        return Snapshot(d.qpos, d.qvel, d.act, d.qacc_warmstart, d.time, extra, obs)

    def first(self, key) -> Snapshot:
        """An episode's first state: the task's random state, its settling, then the stages its
        observation reads (dm_control's ``after_reset`` runs all of ``mj_forward``, which changes no
        state; the ported observations need no acceleration-stage quantity)."""
        qpos, qvel, extra = self.port.init(key)
        d = self.d0.replace(qpos=qpos, qvel=qvel)
        if self.port.settle is not None:
            d = self.port.settle(self.mx, d)
        d = self._refresh(d)
        return self._snapshot(d, extra, self.port.observe(d, extra).astype(jnp.float32))

    def reset(self, key) -> EnvState:
        """An env's first episode and its spare, from its key: ``refill(promote(refill(blank(key))))``."""
        return self.refill(self.promote(self.refill(self.blank(key))))

    def blank(self, key) -> EnvState:
        """A state without episodes (zeros, stale) holding ``key``."""
        snap = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), self.snapshot_shape)
        return EnvState(snap, snap, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), jnp.asarray(key),
                        jnp.ones((), bool))

    @staticmethod
    def promote(state: EnvState) -> EnvState:
        """Start the spare episode now (t and return 0); the spare is stale."""
        return state._replace(now=state.spare, t=jnp.zeros_like(state.t), ret=jnp.zeros_like(state.ret),
                              stale=jnp.ones_like(state.stale))

    def physics(self, snap: Snapshot, action):
        """(snapshot after one env step, reward, whether it diverged) from ``snap`` and action [A] in [-1, 1]."""
        mjx = load_mjx()
        ctrl = self.low + (jnp.clip(action.astype(jnp.float32), -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)

        def substep(_, carry):
            d, bad = carry
            d = mjx.step(self.mx, d)
            return d, bad | ~jnp.all(jnp.abs(jnp.concatenate([d.qpos, d.qvel, d.qacc])) <= MAX_VALUE)

        d, bad = jax.lax.fori_loop(0, self.port.n_sub_steps, substep, (self._data(snap, ctrl), jnp.zeros((), bool)))
        d = self._refresh(d)
        obs = self.port.observe(d, snap.extra).astype(jnp.float32)
        reward = self.port.reward(d, snap.extra).astype(jnp.float32)
        bad = bad | ~jnp.all(jnp.isfinite(obs)) | ~jnp.isfinite(reward)
        return self._snapshot(d, snap.extra, obs), reward, bad

    def step(self, state: EnvState, action):
        """One env step with auto-reset (the spare); see the module docstring."""
        after, reward, bad = self.physics(state.now, action)
        valid = ~bad
        t = state.t + 1
        timeout = t >= self.port.episode_length
        done = timeout | bad
        reward = jnp.where(valid, reward, 0.0)
        ret = state.ret + reward
        now = jax.tree.map(lambda s, a: jnp.where(done, s, a), state.spare, after)
        out = StepResult(next_obs=jnp.where(valid, after.obs, state.now.obs), reward=reward,
                         discount=valid.astype(jnp.float32), obs=now.obs, valid=valid, done=done,
                         episode_return=jnp.where(valid & timeout, ret, jnp.nan))
        zero = jnp.zeros_like
        return EnvState(now, state.spare, jnp.where(done, zero(t), t), jnp.where(done, zero(ret), ret), state.key,
                        state.stale | done), out

    def refill(self, state: EnvState) -> EnvState:
        """Where ``stale``: a new spare from the next key (split off the env's key)."""
        key, sub = jax.random.split(state.key)
        spare = jax.tree.map(lambda new, old: jnp.where(state.stale, new, old), self.first(sub), state.spare)
        return state._replace(spare=spare, key=jnp.where(state.stale, key, state.key),
                              stale=jnp.zeros_like(state.stale))

    def refill_batch(self, states: EnvState) -> EnvState:
        """``refill`` over any leading batch shape, computed only when some env used its spare."""
        return jax.lax.cond(jnp.any(states.stale), _over_batch(self.refill, states.stale.ndim), lambda s: s, states)

    def step_batch(self, states: EnvState, actions):
        """``step`` over any leading batch shape (actions [..., A]), then ``refill_batch``: one program."""
        states, out = _over_batch(self.step, states.stale.ndim)(states, actions)
        return self.refill_batch(states), out

    def reset_batch(self, keys) -> EnvState:
        """``reset`` over keys [..., 2]."""
        return _over_batch(self.reset, keys.ndim - 1)(keys)

    def programs(self, ndim: int = 2) -> dict:
        """The host wrapper's jitted programs over ``ndim`` batch axes: ``step`` (no refill), ``refill``
        (called after a step where an episode ended), ``blank`` (of keys) and ``promote``.  Each
        state's physics is compiled twice in all (the step's and the first state's), where
        ``step_batch`` and ``reset_batch`` as separate programs would hold it three times."""
        return {"step": jax.jit(_over_batch(self.step, ndim)), "refill": jax.jit(_over_batch(self.refill, ndim)),
                "blank": jax.jit(_over_batch(self.blank, ndim)), "promote": jax.jit(self.promote)}


def _over_batch(fn, ndim: int):
    """``fn`` vmapped over ``ndim`` leading axes of every argument."""
    for _ in range(ndim):
        fn = jax.vmap(fn)
    return fn


def env_keys(seeds, num_envs: int, stream: int) -> np.ndarray:
    """Keys [S, E, 2] uint32: env (s, e) gets ``jax.random.PRNGKey(env_seed(seeds[s], e, stream))``."""
    from rfm_jax.envs.base import env_seed

    return np.asarray([[np.asarray(jax.random.PRNGKey(env_seed(s, e, stream))) for e in range(num_envs)]
                       for s in seeds], np.uint32).reshape(len(seeds), num_envs, 2)
