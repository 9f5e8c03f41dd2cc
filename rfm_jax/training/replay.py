"""A device-resident ring buffer of transitions: pure ``init`` / ``add`` / ``sample``.

State goes in and comes out, so the buffer lives inside a jitted training step and ``jax.vmap``
takes it over seeds.  Slots [0, size) are filled; writes go to ``ptr`` and wrap at ``capacity``.

    add:    slot_i = (ptr + #valid before i) mod capacity,  ptr += #valid,  size = min(size + #valid, capacity)
    sample: idx ~ U{0, ..., size - 1}  (call only once size > 0)
    add_and_sample: add, then U batches drawn as ``sample`` draws them from the written buffer, but
            gathered from the buffer before the write (rows just written are patched in), so XLA
            writes the buffer in place instead of copying it every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from rfm_jax.method.transition import Transition
from rfm_jax.method.validation import check_positive_int, check_rank

Array = jax.Array
__all__ = ["ReplayState", "Transition", "add", "add_and_sample", "init", "sample"]


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


def _slots(state: ReplayState, batch: Transition, valid: Array | None, name: str) -> tuple[Array, Array]:
    """Slots [B] the rows of ``batch`` go to (``capacity``, out of range, for skipped rows) and the
    number of rows written []."""
    check_rank(name, "batch.reward", batch.reward, 1, "[B]")
    batch_size = batch.reward.shape[0]
    if batch_size > state.capacity:
        raise ValueError(f"{name}: batch of {batch_size} exceeds the capacity {state.capacity}.")
    valid = jnp.ones((batch_size,), bool) if valid is None else jnp.asarray(valid, bool)
    check_rank(name, "valid", valid, 1, "[B]")
    offsets = jnp.cumsum(valid.astype(jnp.int32)) - 1
    slots = jnp.where(valid, (state.ptr + offsets) % state.capacity, state.capacity)
    return slots, jnp.sum(valid.astype(jnp.int32))


def _write(state: ReplayState, batch: Transition, slots: Array, count: Array) -> ReplayState:
    data = jax.tree.map(lambda buf, x: buf.at[slots].set(x.astype(buf.dtype), mode="drop"), state.data, batch)
    return ReplayState(
        data=data,
        ptr=(state.ptr + count) % state.capacity,
        size=jnp.minimum(state.size + count, state.capacity),
    )


def add(state: ReplayState, batch: Transition, valid: Array | None = None) -> ReplayState:
    """Write a batch of transitions (leaves [B, ...]); rows with ``valid[B] == False`` are skipped.

    B must not exceed the capacity.
    """
    slots, count = _slots(state, batch, valid, "replay.add")
    return _write(state, batch, slots, count)


def sample(state: ReplayState, key: Array, batch_size: int) -> Transition:
    """``batch_size`` transitions drawn uniformly with replacement from the filled slots."""
    check_positive_int("replay.sample", "batch_size", batch_size)
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree.map(lambda buf: buf[idx], state.data)


def add_and_sample(state: ReplayState, batch: Transition, valid: Array | None, keys: Array, batch_size: int):
    """``add`` then one ``sample`` per key [U]: returns (state, batches with leaves [U, batch_size, ...]).

    The numbers equal ``sample(add(state, batch, valid), key, batch_size)`` for each key.  The rows
    are gathered from the buffer before the write, with the rows just written patched in, and the
    write is ordered after the gathers, so the buffer is updated in place.
    """
    check_positive_int("replay.add_and_sample", "batch_size", batch_size)
    slots, count = _slots(state, batch, valid, "replay.add_and_sample")
    size = jnp.minimum(state.size + count, state.capacity)

    def sample_one(key):
        idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(size, 1))
        match = idx[:, None] == slots[None, :]  # [batch_size, B]
        written, row = jnp.any(match, axis=1), jnp.argmax(match, axis=1)
        patch = lambda buf, x: jnp.where(  # noqa: E731
            written.reshape(-1, *([1] * (buf.ndim - 1))), x[row].astype(buf.dtype), buf[idx])
        return jax.tree.map(patch, state.data, batch)

    batches = jax.vmap(sample_one)(keys)
    # The write must come after the gathers, or XLA copies the buffer to keep the old one alive:
    # scaling the written rows by a one computed from the gathered rows orders it (x * 1 is exact).
    zero = sum(jnp.sum(x) for x in jax.tree.leaves(batches)) * 0.0
    one = 1.0 + jnp.where(jnp.isfinite(zero), zero, 0.0)
    batch = jax.tree.map(lambda x: x * one.astype(x.dtype), batch)
    return _write(state, batch, slots, count), batches
