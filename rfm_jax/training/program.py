"""The device side of training: one ``TrainState`` pytree and the per-env-step functions.

For every env step the host makes one call, ``jit(vmap(train_step))`` over S seeds, which

    1. adds the E transitions of the previous env step to the replay buffer (invalid rows skipped),
    2. runs ``updates_per_step`` agent updates on batches sampled from the buffer,
    3. returns the next action of each of the E envs (the agent's training action, ``greedy=False``).

The action of env step k is thus drawn with the parameters after the update that saw transitions
up to k - 1: for RFM, the same order as the reference's act -> step -> store -> update loop (docs/method.md
section 7); acting before the update inside the call would act with parameters one update older.
``warmup_step`` does 1 and returns uniform random actions instead (no update).  The host only
steps MuJoCo.  Everything here acts on one run and any ``rfm_jax.agents.Agent``; ``compile_seeds`` adds
the run axis (seeds, or seeds x swept values).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from rfm_jax.agents.base import Agent
from rfm_jax.method.validation import check_positive_int, check_rank
from rfm_jax.training import replay

Array = jax.Array


@struct.dataclass
class TrainState:
    agent: Any  # the agent's state
    replay: replay.ReplayState
    key: Array  # PRNG key of this seed
    env_steps: Array  # [] int32: env steps taken by each env of this seed


class StepFns(NamedTuple):
    """Single-seed functions (vmap them over seeds, or use ``compile_seeds``).

    init(key, hyper) -> TrainState
    warmup_step(state, transitions [E], valid [E], obs [E, O]) -> (state, actions [E, A], metrics)
    train_step(state, transitions [E], valid [E], obs [E, O]) -> (state, actions [E, A], metrics)
    eval_act(agent_state, key, obs [E, O]) -> actions [E, A] (the agent's greedy action)
    """

    init: callable
    warmup_step: callable
    train_step: callable
    eval_act: callable


def empty_transitions(num_envs: int, obs_dim: int, action_dim: int) -> replay.Transition:
    """A zero batch of E transitions (the ``transitions`` argument of the very first step)."""
    return replay.Transition(
        obs=jnp.zeros((num_envs, obs_dim), jnp.float32),
        action=jnp.zeros((num_envs, action_dim), jnp.float32),
        reward=jnp.zeros((num_envs,), jnp.float32),
        discount=jnp.zeros((num_envs,), jnp.float32),
        next_obs=jnp.zeros((num_envs, obs_dim), jnp.float32),
    )


def make_step_fns(
    agent: Agent,
    *,
    obs_dim: int,
    action_dim: int,
    num_envs: int,
    replay_capacity: int,
    batch_size: int,
    updates_per_step: int = 1,
) -> StepFns:
    """Wrap an agent into the per-env-step functions; all arguments are static."""
    name = "make_step_fns"
    for arg, value in (("obs_dim", obs_dim), ("action_dim", action_dim), ("num_envs", num_envs),
                       ("replay_capacity", replay_capacity), ("batch_size", batch_size),
                       ("updates_per_step", updates_per_step)):
        check_positive_int(name, arg, value)
    if batch_size > replay_capacity:
        raise ValueError(f"{name}: `batch_size` ({batch_size}) exceeds `replay_capacity` ({replay_capacity}).")
    if num_envs > replay_capacity:
        raise ValueError(f"{name}: `num_envs` ({num_envs}) exceeds `replay_capacity` ({replay_capacity}).")

    def init(key: Array, hyper) -> TrainState:
        key, key_agent = jax.random.split(key)
        example = jax.tree.map(lambda x: x[0], empty_transitions(1, obs_dim, action_dim))
        return TrainState(
            agent=agent.init(key_agent, hyper),
            replay=replay.init(replay_capacity, example),
            key=key,
            env_steps=jnp.zeros((), jnp.int32),
        )

    def _add(state: TrainState, transitions, valid, obs):
        check_rank(name, "obs", obs, 2, "[E, O]")
        check_rank(name, "valid", valid, 1, "[E]")
        return state.replace(replay=replay.add(state.replay, transitions, valid))

    def warmup_step(state: TrainState, transitions, valid, obs):
        state = _add(state, transitions, valid, obs)
        key, key_action = jax.random.split(state.key)
        actions = jax.random.uniform(key_action, (obs.shape[0], action_dim), minval=-1.0, maxval=1.0)
        return state.replace(key=key, env_steps=state.env_steps + 1), actions, {}

    def train_step(state: TrainState, transitions, valid, obs):
        check_rank(name, "obs", obs, 2, "[E, O]")
        key, key_updates, key_act = jax.random.split(state.key, 3)
        key_batches, key_agents = jnp.moveaxis(
            jax.vmap(jax.random.split)(jax.random.split(key_updates, updates_per_step)), 1, 0)
        # Every update's batch is drawn from the buffer with the new transitions, before the update
        # loop and without a copy of the buffer (``replay.add_and_sample``).
        buffer, batches = replay.add_and_sample(state.replay, transitions, valid, key_batches, batch_size)
        agent_state, metrics = jax.lax.scan(lambda s, inputs: agent.update(s, *inputs), state.agent,
                                            (key_agents, batches))
        metrics = jax.tree.map(jnp.mean, metrics)
        act_keys = jax.random.split(key_act, obs.shape[0])
        actions = jax.vmap(agent.act, (None, 0, 0, None))(agent_state, act_keys, obs, False)
        new_state = state.replace(agent=agent_state, replay=buffer, key=key, env_steps=state.env_steps + 1)
        return new_state, actions, metrics

    def eval_act(agent_state, key: Array, obs: Array) -> Array:
        check_rank("eval_act", "obs", obs, 2, "[E, O]")
        keys = jax.random.split(key, obs.shape[0])
        return jax.vmap(agent.act, (None, 0, 0, None))(agent_state, keys, obs, True)

    return StepFns(init=init, warmup_step=warmup_step, train_step=train_step, eval_act=eval_act)


def compile_seeds(fns: StepFns, sharding=None) -> StepFns:
    """``jit(vmap(...))`` over a leading run axis R (seeds, or seeds x swept values); the training
    state is donated (no copy of the replay buffer per step).  ``init`` takes keys [R] and a hyper
    pytree whose leaves all have the leading axis R (``runs.hyper_per_run`` builds it).  With
    ``sharding`` (``rfm_jax.infra.distributed.Layout.sharding``) every argument and output is split
    over the devices along R."""
    if sharding is None:
        return StepFns(
            init=jax.jit(jax.vmap(fns.init)),
            warmup_step=jax.jit(jax.vmap(fns.warmup_step), donate_argnums=0),
            train_step=jax.jit(jax.vmap(fns.train_step), donate_argnums=0),
            eval_act=jax.jit(jax.vmap(fns.eval_act)),
        )
    on_runs = dict(out_shardings=sharding)
    return StepFns(
        init=jax.jit(jax.vmap(fns.init), in_shardings=(sharding,) * 2, **on_runs),
        warmup_step=jax.jit(jax.vmap(fns.warmup_step), in_shardings=(sharding,) * 4, donate_argnums=0, **on_runs),
        train_step=jax.jit(jax.vmap(fns.train_step), in_shardings=(sharding,) * 4, donate_argnums=0, **on_runs),
        eval_act=jax.jit(jax.vmap(fns.eval_act), in_shardings=(sharding,) * 3, **on_runs),
    )


def compile_ahead(fns: StepFns, state: TrainState, transitions, valid, obs, *, eval_episodes: int,
                  phases=("warmup", "train"), layout=None) -> StepFns:
    """``fns`` (from ``compile_seeds``) with ``eval_act`` and the step functions named in
    ``phases`` compiled now, for these arguments' shapes (``lower(...).compile()``); the others
    stay jitted.  The loop compiles here, before its first step, where a signal can stop it
    (``guards.wait_interruptibly``).  Shapes: ``obs`` [R, E, O], ``eval_act`` for [R, eval_episodes, O]
    (sharded like ``layout``'s runs when given)."""
    args = (state, transitions, valid, obs)
    warmup = fns.warmup_step.lower(*args).compile() if "warmup" in phases else fns.warmup_step
    train = fns.train_step.lower(*args).compile() if "train" in phases else fns.train_step
    num_runs, obs_dim = obs.shape[0], obs.shape[-1]
    sharding = None if layout is None else layout.sharding
    eval_args = (state.agent, jax.ShapeDtypeStruct((num_runs, 2), jnp.uint32, sharding=sharding),
                 jax.ShapeDtypeStruct((num_runs, eval_episodes, obs_dim), jnp.float32, sharding=sharding))
    return fns._replace(warmup_step=warmup, train_step=train, eval_act=fns.eval_act.lower(*eval_args).compile())
