"""The on-device loop's programs: a chunk of env steps, and an evaluation, as single XLA programs
over R runs x E MJX envs (``rfm_jax.envs.mjx_core``), for any agent (``rfm_jax.training.program``'s
step functions).

    chunk(carry [R]) -> (carry, ys [R, L])      L env steps in one ``lax.scan``:
        state, actions, metrics = step_fn(state, pending, valid, obs)      (vmapped over R;
                                  warmup_step before warmup_steps, else train_step)
        envs, out = step every env with its action (auto-reset, [R, E])
        pending = Transition(obs, actions, out.reward, out.discount, out.next_obs)
    evaluate(agent [R], env_keys [R, N, 2], act_keys [R, T, 2]) -> returns [R, N]
        N greedy episodes per run, each slot's first episode counted (NaN where it diverged)

Each step is the host loop's step (``rfm_jax.training.loop``) with the envs inside the program:
the same step functions, the same order (the action of step k is drawn after the update that saw
the transitions of step k - 1), the same env keys.  ``ys`` holds what the host loop reads off each
step to write its rows: the step's metrics [R, L], the sum and count of the returns of episodes
that ended, the mean return of those that finished, the invalid steps, and ``over_bound``: the env
(or -1) that passed the invalid-step bound at this step.

The bound is ``rfm_jax.envs.base.InvalidWindow``'s (more than ``INVALID_LIMIT`` invalid steps among
an env's last ``INVALID_WINDOW``), kept as each env's times of its last ``INVALID_LIMIT + 1``
invalid steps [R, E, K]: the bound is passed when the oldest of them lies inside the window.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from rfm_jax.envs.base import INVALID_LIMIT, INVALID_WINDOW
from rfm_jax.training.program import StepFns, TrainState, empty_transitions
from rfm_jax.training.replay import Transition

Array = jax.Array
NEVER = -(2 ** 30)  # the time of an invalid step that has not happened


@struct.dataclass
class Carry:
    """What a chunk carries from one env step to the next (leading run axis R)."""

    train: TrainState  # the host loop's train state (what checkpoints and load_policy read)
    envs: object  # mjx_core.EnvState [R, E]
    obs: Array  # [R, E, O] the observation each env acts on
    pending: Transition  # [R, E]: the transitions of the last env step, added by the next call
    valid: Array  # [R, E] bool: which of them are transitions
    invalid_times: Array  # [R, E, K] int32: env steps of each env's last K invalid steps (NEVER: none)
    invalid_ptr: Array  # [R, E] int32: the slot of the next invalid step


def start(train: TrainState, core, env_keys: Array, obs_dim: int, action_dim: int) -> Carry:
    """The carry of a fresh run: ``train`` [R], every env's first episode from ``env_keys`` [R, E, 2]."""
    envs = core.reset_batch(env_keys)
    num_runs, num_envs = env_keys.shape[:2]
    pending = jax.tree.map(lambda x: jnp.zeros((num_runs, *x.shape), x.dtype),
                           empty_transitions(num_envs, obs_dim, action_dim))
    return Carry(train=train, envs=envs, obs=envs.now.obs, pending=pending,
                 valid=jnp.zeros((num_runs, num_envs), bool),
                 invalid_times=jnp.full((num_runs, num_envs, INVALID_LIMIT + 1), NEVER, jnp.int32),
                 invalid_ptr=jnp.zeros((num_runs, num_envs), jnp.int32))


def _note_invalid(times: Array, ptr: Array, invalid: Array, now: Array):
    """One env's ring of invalid-step times after step ``now``: (times [K], ptr [], over the bound [])."""
    times = jnp.where(invalid, times.at[ptr].set(now), times)
    ptr = jnp.where(invalid, (ptr + 1) % times.shape[0], ptr)
    oldest = times[ptr]  # the K-th most recent invalid step
    return times, ptr, invalid & (oldest > now - INVALID_WINDOW)


def _finished_mean(episode_return: Array) -> Array:
    """Mean return [] of the episodes that finished this step (NaN where none did), over E."""
    ended = jnp.isfinite(episode_return)
    total = jnp.sum(jnp.where(ended, episode_return, 0.0))
    return jnp.where(ended.any(), total / jnp.maximum(ended.sum(), 1), jnp.nan)


def make_chunk(fns: StepFns, core, warmup_steps: int, length: int):
    """``chunk(carry) -> (carry, ys)``: ``length`` env steps over every run (``fns`` unvmapped, from
    ``make_step_fns``); a step before ``warmup_steps`` is a warm-up step (uniform actions, no update,
    its metrics zeros), chosen by one ``lax.cond`` so the envs are compiled once.  ``ys`` leaves are [R, L]."""
    warmup, train = jax.vmap(fns.warmup_step), jax.vmap(fns.train_step)
    note = jax.vmap(jax.vmap(_note_invalid, (0, 0, 0, None)), (0, 0, 0, 0))

    def warmup_zeros(*args):
        state, actions, _ = warmup(*args)
        shapes = jax.eval_shape(train, *args)[2]
        return state, actions, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    def body(carry: Carry, _):
        args = (carry.train, carry.pending, carry.valid, carry.obs)
        train_state, actions, metrics = jax.lax.cond(jnp.max(carry.train.env_steps) < warmup_steps, warmup_zeros,
                                                     train, *args)
        envs, out = core.step_batch(carry.envs, actions)
        times, ptr, over = note(carry.invalid_times, carry.invalid_ptr, ~out.valid, train_state.env_steps)
        ended = jnp.isfinite(out.episode_return)  # ended this step (not diverged)
        ys = {"metrics": metrics, "return_sum": jnp.sum(jnp.where(ended, out.episode_return, 0.0), axis=1),
              "episodes": ended.sum(axis=1), "finished_mean": jax.vmap(_finished_mean)(out.episode_return),
              "invalid": (~out.valid).sum(axis=1),
              "over_bound": jnp.where(over.any(axis=1), jnp.argmax(over, axis=1), -1)}
        pending = Transition(carry.obs, actions, out.reward, out.discount, out.next_obs)
        carry = Carry(train=train_state, envs=envs, obs=out.obs, pending=pending, valid=out.valid,
                      invalid_times=times, invalid_ptr=ptr)
        return carry, ys

    def chunk(carry: Carry):
        carry, ys = jax.lax.scan(body, carry, None, length=length)
        return carry, jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), ys)  # [R, L]: sharded like the runs

    return chunk


def make_evaluate(fns: StepFns, core):
    """``evaluate(agent [R], env_keys [R, N, 2], act_keys [R, T, 2]) -> returns [R, N]``: N greedy
    episodes per run from the envs of ``env_keys``; step t acts with ``act_keys[:, t]`` as the host
    loop's evaluation does (``rfm_jax.training.evaluation``).  Each slot's first episode counts."""
    eval_act = jax.vmap(fns.eval_act)
    step = jax.vmap(jax.vmap(core.step))

    def evaluate(agent_state, env_keys: Array, act_keys: Array) -> Array:
        envs = core.reset_batch(env_keys)
        returns = jnp.full(env_keys.shape[:2], jnp.nan, jnp.float32)
        running = jnp.ones(env_keys.shape[:2], bool)

        def body(carry, key_t):
            envs, returns, running = carry
            actions = eval_act(agent_state, key_t, envs.now.obs)
            envs, out = step(envs, actions)
            first = out.done & running
            return (envs, jnp.where(first, out.episode_return, returns), running & ~out.done), None

        (_, returns, _), _ = jax.lax.scan(body, (envs, returns, running), jnp.swapaxes(act_keys, 0, 1))
        return returns

    return evaluate


def chunk_length(*counts: int) -> int:
    """The chunk length: the greatest common divisor of the step counts at which the host acts
    (log, evaluation, checkpoint, the end), so every such step is a boundary."""
    import math

    return math.gcd(*counts)
