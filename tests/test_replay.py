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


def test_train_step_writes_the_buffer_in_place():
    """The compiled train step copies no replay-sized array (it did: a 250k-slot buffer cost 5 ms a step)."""
    from rfm_jax.agents import make_agent
    from rfm_jax.training.program import compile_seeds, empty_transitions, make_step_fns
    from rfm_jax.training.sweeps import expand, hyper_per_run, run_keys

    capacity = 4099  # a size no other array in the step has
    agent = make_agent("rfm", obs_dim=3, action_dim=2, num_posterior_particles=4, num_train_particles=2,
                       num_act_particles=2, num_eval_particles=2, num_ode_steps=2, actor_width=16,
                       critic_hidden=(16, 16))
    fns = compile_seeds(make_step_fns(agent, obs_dim=3, action_dim=2, num_envs=1, replay_capacity=capacity,
                                      batch_size=8))
    runs = expand([0], None)
    state = fns.init(run_keys(runs), hyper_per_run(agent.hyper, runs))
    transitions = jax.tree.map(lambda x: x[None], empty_transitions(1, 3, 2))
    hlo = fns.train_step.lower(state, transitions, jnp.ones((1, 1), bool), jnp.zeros((1, 1, 3))).compile().as_text()
    copies = [line for line in hlo.splitlines() if f",{capacity}" in line and " copy(" in line]
    assert not copies, copies
