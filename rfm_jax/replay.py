"""A device-resident ring buffer of transitions: pure ``init`` / ``add`` / ``sample``.

State goes in and comes out, so the buffer lives inside a jitted training step and ``jax.vmap``
takes it over seeds.  Slots [0, size) are filled; writes go to ``ptr`` and wrap at ``capacity``.

    add:    slot_i = (ptr + #valid before i) mod capacity,  ptr += #valid,  size = min(size + #valid, capacity)
    sample: idx ~ U{0, ..., size - 1}  (call only once size > 0)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from rfm_jax.checks import check_positive_int, check_rank

Array = jax.Array


class Transition(NamedTuple):
    """One transition (or a batch with a leading axis).  ``discount`` is the env's (1 at a time
    limit, 0 at a true terminal); ``next_obs`` is the true next observation."""

    obs: Array  # [O]
    action: Array  # [A] in [-1, 1]
    reward: Array  # []
    discount: Array  # []
    next_obs: Array  # [O]


@struct.dataclass
class ReplayState:
    data: Transition  # leaves [capacity, ...]
    ptr: Array  # [] int32, next slot to write
    size: Array  # [] int32, number of filled slots

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[0]


def init(capacity: int, example: Transition) -> ReplayState:
    """An empty buffer of ``capacity`` slots shaped like the single ``example`` transition."""
    check_positive_int("replay.init", "capacity", capacity)
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example)
    return ReplayState(data=data, ptr=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def add(state: ReplayState, batch: Transition, valid: Array | None = None) -> ReplayState:
    """Write a batch of transitions (leaves [B, ...]); rows with ``valid[B] == False`` are skipped.

    B must not exceed the capacity.
    """
    check_rank("replay.add", "batch.reward", batch.reward, 1, "[B]")
    batch_size = batch.reward.shape[0]
    if batch_size > state.capacity:
        raise ValueError(f"replay.add: batch of {batch_size} exceeds the capacity {state.capacity}.")
    valid = jnp.ones((batch_size,), bool) if valid is None else jnp.asarray(valid, bool)
    check_rank("replay.add", "valid", valid, 1, "[B]")
    offsets = jnp.cumsum(valid.astype(jnp.int32)) - 1
    slots = jnp.where(valid, (state.ptr + offsets) % state.capacity, state.capacity)  # out of range: dropped
    data = jax.tree.map(lambda buf, x: buf.at[slots].set(x.astype(buf.dtype), mode="drop"), state.data, batch)
    count = jnp.sum(valid.astype(jnp.int32))
    return ReplayState(
        data=data,
        ptr=(state.ptr + count) % state.capacity,
        size=jnp.minimum(state.size + count, state.capacity),
    )


def sample(state: ReplayState, key: Array, batch_size: int) -> Transition:
    """``batch_size`` transitions drawn uniformly with replacement from the filled slots."""
    check_positive_int("replay.sample", "batch_size", batch_size)
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree.map(lambda buf: buf[idx], state.data)
