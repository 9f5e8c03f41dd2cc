"""Replay ring buffer: wrap-around, invalid rows, sampling only filled slots, vmap over seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfm_jax.training import replay


def _batch(values, obs_dim=2):
    values = jnp.asarray(values, jnp.float32)
    return replay.Transition(
        obs=jnp.repeat(values[:, None], obs_dim, 1), action=values[:, None], reward=values,
        discount=jnp.ones_like(values), next_obs=jnp.repeat(values[:, None] + 0.5, obs_dim, 1),
    )


def _example():
    return jax.tree.map(lambda x: x[0], _batch([0.0]))


def test_add_wraps_around():
    state = replay.init(5, _example())
    state = replay.add(state, _batch([1, 2, 3]))
    assert int(state.ptr) == 3 and int(state.size) == 3
    state = replay.add(state, _batch([4, 5, 6, 7]))
    assert int(state.ptr) == 2 and int(state.size) == 5
    np.testing.assert_array_equal(state.data.reward, [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(state.data.next_obs[:, 0], [6.5, 7.5, 3.5, 4.5, 5.5])


def test_invalid_rows_are_skipped():
    state = replay.init(4, _example())
    state = replay.add(state, _batch([1, 2, 3]), jnp.array([True, False, True]))
    assert int(state.ptr) == 2 and int(state.size) == 2
    np.testing.assert_array_equal(state.data.reward, [1, 3, 0, 0])


def test_samples_come_only_from_filled_slots():
    state = replay.init(100, _example())
    state = replay.add(state, _batch(np.arange(1, 8)))
    sample = jax.jit(replay.sample, static_argnums=2)(state, jax.random.PRNGKey(0), 2000)
    values = np.asarray(sample.reward)
    assert set(values.tolist()) == set(range(1, 8))  # never an empty slot (0), every filled one drawn
    np.testing.assert_array_equal(sample.obs[:, 0], values)
    np.testing.assert_array_equal(sample.next_obs[:, 0], values + 0.5)


def test_vmap_over_seeds():
    states = jax.vmap(lambda _: replay.init(3, _example()))(jnp.arange(2))
    batches = jax.tree.map(lambda x: jnp.stack([x, x + 10]), _batch([1, 2]))
    valid = jnp.array([[True, True], [False, True]])
    states = jax.jit(jax.vmap(replay.add))(states, batches, valid)
    np.testing.assert_array_equal(states.size, [2, 1])
    np.testing.assert_array_equal(states.data.reward, [[1, 2, 0], [12, 0, 0]])


def test_errors():
    state = replay.init(2, _example())
    with pytest.raises(ValueError, match="capacity"):
        replay.add(state, _batch([1, 2, 3]))
    with pytest.raises(ValueError, match="capacity"):
        replay.init(0, _example())


@pytest.mark.parametrize("valid", [[True, True, True], [True, False, True], [False, False, False]])
def test_add_and_sample_equals_add_then_sample(valid):
    """The fused version gathers from the buffer before the write and patches the new rows in; its
    numbers equal sample(add(...)), including rows that overwrite old ones at the wrap-around."""
    state = replay.add(replay.init(6, _example()), _batch(np.arange(1, 6)))  # 5 of 6 slots, ptr 5
    new, valid = _batch([10, 11, 12]), jnp.asarray(valid)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    fused, batches = jax.jit(replay.add_and_sample, static_argnums=4)(state, new, valid, keys, 300)
    written = replay.add(state, new, valid)
    jax.tree.map(np.testing.assert_array_equal, fused, written)
    for u, key in enumerate(keys):
        expected = replay.sample(written, key, 300)
        jax.tree.map(lambda a, b, u=u: np.testing.assert_array_equal(a[u], b), batches, expected)
    if bool(valid.all()):  # slots 5, 0, 1 were (over)written: both new rows 10-12 and old ones drawn
        assert {10, 11, 12} <= set(np.asarray(batches.reward).ravel().tolist())
        assert 1 not in set(np.asarray(batches.reward).ravel().tolist())  # slot 0 now holds 11
