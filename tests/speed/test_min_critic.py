"""rfm_jax.networks.min_critic: min_k Q_k and its action gradient through the argmin critic, against autodiff
of jnp.min over the CriticEnsemble, under jit, nested vmaps, lax.map chunks and vmapped seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfm_jax.networks import CriticEnsemble, min_critic

OBS_DIM, ACTION_DIM, STATES, PARTICLES = 5, 3, 7, 11


def _setup(num_critics, hidden, seed=0):
    module = CriticEnsemble(num_critics, hidden)
    key_init, key_obs, key_u = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = module.init(key_init, jnp.zeros(OBS_DIM), jnp.zeros(ACTION_DIM))
    obs = jax.random.normal(key_obs, (STATES, OBS_DIM))
    u = 1.5 * jax.random.normal(key_u, (STATES, PARTICLES, ACTION_DIM))
    return module, params, obs, u


def _log_target(q_fn):
    """The posterior's latent target: q(tanh u) / lambda + sum log(1 - tanh^2 u)."""
    return lambda u: q_fn(jnp.tanh(u)) / 0.1 + jnp.sum(jnp.log1p(-jnp.tanh(u) ** 2))


def _value_and_grad_over_states(q_fn, obs, u, chunk):
    """value_and_grad per particle, particles by vmap or lax.map chunks, states by vmap, all jitted."""
    def per_state(obs_i, u_i):
        f = jax.value_and_grad(_log_target(lambda a: q_fn(obs_i, a)))
        return jax.vmap(f)(u_i) if chunk is None else jax.lax.map(f, u_i, batch_size=chunk)

    return jax.jit(jax.vmap(per_state))(obs, u)


@pytest.mark.parametrize("num_critics,hidden", [(2, (32, 32)), (3, (16,)), (2, (8, 16, 8))])
@pytest.mark.parametrize("chunk", [None, 4])
def test_value_and_gradient_equal_autodiff_of_the_min(num_critics, hidden, chunk):
    module, params, obs, u = _setup(num_critics, hidden)
    plain = lambda o, a: jnp.min(module.apply(params, o, a))  # noqa: E731
    ours = lambda o, a: min_critic.q_min(params, o, a)  # noqa: E731
    (v_ref, g_ref), (v, g) = (_value_and_grad_over_states(f, obs, u, chunk) for f in (plain, ours))
    assert v.shape == (STATES, PARTICLES) and g.shape == (STATES, PARTICLES, ACTION_DIM)
    np.testing.assert_allclose(v, v_ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(g_ref))))
    q_all = jax.vmap(jax.vmap(module.apply, (None, None, 0)), (None, 0, 0))(params, obs, jnp.tanh(u))
    assert len(np.unique(np.asarray(jnp.argmin(q_all, axis=-1)))) == num_critics  # every critic is an argmin


def test_vmapped_seeds_and_a_single_unbatched_call():
    module, params, obs, u = _setup(2, (32, 32), seed=1)
    seeds = jax.tree.map(lambda x: jnp.stack([x, 1.3 * x]), params)

    def grads(q_fn):
        per_seed = lambda p: jax.vmap(jax.vmap(jax.grad(_log_target(lambda a: q_fn(p, a))), (0,)),  # noqa: E731
                                      (0,))(u)
        return jax.jit(jax.vmap(per_seed))(seeds)

    # obs is shared by the states here (the "obs unbatched, actions batched" pooling path)
    plain = grads(lambda p, a: jnp.min(module.apply(p, obs[0], a)))
    ours = grads(lambda p, a: min_critic.q_min(p, obs[0], a))
    np.testing.assert_allclose(ours, plain, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(plain))))
    single = jax.grad(lambda a: min_critic.q_min(params, obs[0], a))(u[0, 0])
    np.testing.assert_allclose(single, jax.grad(lambda a: jnp.min(module.apply(params, obs[0], a)))(u[0, 0]),
                               rtol=1e-5, atol=1e-6)


def test_the_rows_of_every_vmap_level_reach_one_call(monkeypatch):
    seen = []
    impl = min_critic._value_and_grad_impl

    def record(params, obs, action):
        seen.append((obs.shape, action.shape))
        return impl(params, obs, action)

    monkeypatch.setattr(min_critic, "_value_and_grad_impl", record)
    _, params, obs, u = _setup(2, (16, 16), seed=2)
    _value_and_grad_over_states(lambda o, a: min_critic.q_min(params, o, a), obs, u, None)
    # the custom_vmap traces the body at each level for its shapes; the call that runs pools all rows
    assert seen[-1] == ((STATES, OBS_DIM), (STATES, PARTICLES, ACTION_DIM))
    assert all(action[0] * action[1] <= STATES * PARTICLES for _, action in seen)


RANDOM_K = list(np.random.default_rng(0).integers(0, 3, 50))


@pytest.mark.parametrize("k_star", [[0] * 5, [1, 0, 1, 1, 0, 2, 2, 0, 1], RANDOM_K])
def test_sorted_slots_put_each_row_once_in_a_block_of_its_critic(k_star):
    k_star = jnp.asarray(k_star, jnp.int32)
    block, num_critics = 4, 3
    src, pos, crit = min_critic._sorted_slots(k_star, num_critics, block)
    rows = k_star.shape[0]
    assert src.shape == ((-(-rows // block) + num_critics - 1) * block,) and crit.shape == (src.shape[0] // block,)
    assert len(set(np.asarray(pos).tolist())) == rows  # distinct slots
    np.testing.assert_array_equal(src[pos], jnp.arange(rows))
    np.testing.assert_array_equal(crit[pos // block], k_star)  # each row sits in a block of its critic


def test_derivatives_other_than_the_action_raise():
    _, params, obs, u = _setup(2, (8,))
    with pytest.raises(NotImplementedError, match="only derivatives w.r.t. the action"):
        jax.grad(lambda p: min_critic.q_min(p, obs[0], u[0, 0]))(params)
    with pytest.raises(NotImplementedError, match="only derivatives w.r.t. the action"):
        jax.grad(lambda o: min_critic.q_min(params, o, u[0, 0]))(obs[0])


@pytest.mark.slow
def test_rfm_update_equals_the_update_with_autodiff_of_the_min(monkeypatch):
    """Three RFM updates (jit, vmap over 2 seeds) with ``min_critic.q_min`` and with plain autodiff
    of jnp.min over the ensemble: the same actor parameters to float32 rounding."""
    from rfm_jax.agents import make_agent
    from rfm_jax.training.replay import Transition

    obs_dim, action_dim, batch_size = 4, 2, 32
    agent = make_agent("rfm", obs_dim=obs_dim, action_dim=action_dim, num_posterior_particles=8,
                       num_train_particles=3, num_act_particles=3, num_eval_particles=3, num_ode_steps=2,
                       actor_width=16, actor_blocks=1, actor_embed_dim=4, critic_hidden=(32, 32),
                       particle_batch=4)
    k_obs, k_act, k_next = jax.random.split(jax.random.PRNGKey(1), 3)
    obs = jax.random.normal(k_obs, (batch_size, obs_dim))
    batch = Transition(obs, jnp.tanh(jax.random.normal(k_act, (batch_size, action_dim))),
                       -jnp.sum(obs**2, axis=-1), jnp.full((batch_size,), 0.9),
                       jax.random.normal(k_next, (batch_size, obs_dim)))

    def three_updates():
        init = jax.vmap(agent.init, (0, None))(jax.random.split(jax.random.PRNGKey(0), 2), agent.hyper)
        step = jax.jit(jax.vmap(agent.update, (0, 0, None)))
        state = init
        for i in range(3):
            state = step(state, jax.random.split(jax.random.PRNGKey(10 + i), 2), batch)[0]
        return state.actor_params

    ours = three_updates()
    module = CriticEnsemble(2, (32, 32))
    monkeypatch.setattr(min_critic, "q_min", lambda p, o, a: jnp.min(module.apply(p, o, a)))
    plain = three_updates()
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
