"""Every registered agent through the one interface: update under jit + vmap over 2 seeds lowers the
critic loss on a fixed batch, actions stay in [-1, 1], bad arguments and hyperparameters fail
with one line naming the field; the registry refuses unknown names; sweeps build a run axis."""

import jax
import jax.numpy as jnp
import numpy as np
import presets
import pytest

from rfm_jax.agents import REGISTRY, base, make_agent, particles
from rfm_jax.training import sweeps
from rfm_jax.training.replay import Transition

OBS, ACT, BATCH = 4, 2, 32
CRITIC = dict(critic_hidden=(32, 32), critic_lr=3e-3)  # critics that learn the test batch in 100 updates


def tiny(name: str) -> dict:
    """Agent ``name``'s smoke-preset settings with ``CRITIC``."""
    return {**presets.settings(name, "smoke"), **CRITIC}


def _batch(key, batch=BATCH):
    k_obs, k_act, k_next = jax.random.split(key, 3)
    obs = jax.random.normal(k_obs, (batch, OBS))
    action = jnp.tanh(jax.random.normal(k_act, (batch, ACT)))
    reward = -jnp.sum((action - 0.3 * obs[:, :ACT]) ** 2, axis=-1)
    return Transition(obs, action, reward, jnp.full((batch,), 0.9), jax.random.normal(k_next, (batch, OBS)))


def test_every_registered_agent_has_a_preset_file_with_cpu_smoke_and_probe_settings():
    for name in REGISTRY:
        module = presets.preset_file(name)
        for preset in ("cpu", "smoke", "cheetah-run"):
            assert module.get_config(preset).algo == name
        assert presets.probe(name)[2] > 0


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_update_under_jit_vmap_lowers_the_critic_loss_and_acts_in_bounds(name):
    agent = make_agent(name, obs_dim=OBS, action_dim=ACT, **tiny(name))
    runs = sweeps.expand([0, 1], None)
    states = jax.vmap(agent.init)(sweeps.run_keys(runs), sweeps.hyper_per_run(agent.hyper, runs))
    batch = jax.tree.map(lambda x: jnp.stack([x] * 2), _batch(jax.random.PRNGKey(1)))

    def run(states, key):
        def body(states, key_step):
            return jax.vmap(agent.update)(states, jax.random.split(key_step, 2), batch)

        return jax.lax.scan(body, states, jax.random.split(key, 100))

    states, metrics = jax.jit(run)(states, jax.random.PRNGKey(2))
    critic = np.asarray(metrics["critic_loss"])
    assert critic.shape == (100, 2) and all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())
    assert np.all(critic[-10:].mean(0) < 0.5 * critic[:10].mean(0)), critic[[0, -1]]
    first = jax.tree.leaves(states.critic_params)[0]
    assert not np.allclose(first[0], first[1])  # the seeds differ
    obs = jax.random.normal(jax.random.PRNGKey(3), (2, 7, OBS)) * 5
    keys = jax.random.split(jax.random.PRNGKey(4), 14).reshape(2, 7, 2)
    for greedy in (False, True):
        act = jax.jit(jax.vmap(jax.vmap(lambda s, k, o, g=greedy: agent.act(s, k, o, g), (None, 0, 0))))
        actions = np.asarray(act(states, keys, obs))
        assert actions.shape == (2, 7, ACT) and np.all(np.abs(actions) <= 1.0)
    greedy = jax.jit(lambda s, k, o: agent.act(s, k, o, True))
    one = jax.tree.map(lambda x: x[0], states)
    if name == "sac":  # the mean action does not depend on the key
        np.testing.assert_array_equal(greedy(one, keys[0, 0], obs[0, 0]), greedy(one, keys[0, 1], obs[0, 0]))


def test_registry_and_factories_name_bad_arguments():
    with pytest.raises(ValueError, match="unknown agent 'ppo'.*rfm, sac"):
        make_agent("ppo", obs_dim=OBS, action_dim=ACT)
    with pytest.raises(ValueError, match="`actor_hidden`"):
        make_agent("sac", obs_dim=OBS, action_dim=ACT, actor_hidden=(0, 4))
    with pytest.raises(ValueError, match="`critic_lr`"):
        make_agent("sac", obs_dim=OBS, action_dim=ACT, critic_lr=0.0)
    with pytest.raises(ValueError, match="`num_critics`"):
        make_agent("rfm", obs_dim=OBS, action_dim=ACT, num_critics=0)


@pytest.mark.parametrize("name, field, value", [("rfm", "temperature", 0.0), ("rfm", "tau", 1.5),
                                                ("sac", "init_alpha", -1.0), ("sac", "gamma", 2.0),
                                                ("qne", "temperature", -1.0), ("dqs", "eta", 0.0),
                                                ("dqs", "tau", 0.0), ("qvpo", "temperature", 0.0),
                                                ("qsm", "score_scale", 0.0)])
def test_check_hyper_names_the_field_for_every_swept_value(name, field, value):
    agent = make_agent(name, obs_dim=OBS, action_dim=ACT, **tiny(name))
    agent.check_hyper(agent.hyper)
    good = getattr(agent.hyper, field)
    swept = agent.hyper.replace(**{field: np.array([good, value])})
    with pytest.raises(ValueError, match=f"`hyper.{field}`"):
        agent.check_hyper(swept)


def test_sweeps_expand_seed_major_and_refuse_non_leaves():
    agent = make_agent("rfm", obs_dim=OBS, action_dim=ACT, **tiny("rfm"))
    runs = sweeps.expand([3, 4], {"temperature": [0.01, 0.05], "tau": [0.1]}, agent.hyper)
    assert [r.name for r in runs] == ["seed3_temperature0.01_tau0.1", "seed3_temperature0.05_tau0.1",
                                      "seed4_temperature0.01_tau0.1", "seed4_temperature0.05_tau0.1"]
    hyper = sweeps.hyper_per_run(agent.hyper, runs)
    np.testing.assert_allclose(hyper.temperature, [0.01, 0.05, 0.01, 0.05])
    np.testing.assert_allclose(hyper.gamma, [0.99] * 4)
    assert hyper.temperature_final is None
    keys = np.asarray(sweeps.run_keys(runs))
    np.testing.assert_array_equal(keys[0], keys[1])
    assert not np.array_equal(keys[0], keys[2])
    with pytest.raises(ValueError, match="`actor_width` is not a hyperparameter leaf"):
        sweeps.expand([0], {"actor_width": [8, 16]}, agent.hyper)
    with pytest.raises(ValueError, match="repeats"):
        sweeps.expand([0], {"temperature": [0.1, 0.1]}, agent.hyper)


@pytest.mark.slow
def test_a_swept_value_trains_as_its_own_run():
    """Run r of a sweep equals a single run with that value (same seed, same program shape)."""
    agent = make_agent("rfm", obs_dim=OBS, action_dim=ACT, **tiny("rfm"))
    batch = _batch(jax.random.PRNGKey(1))
    runs = sweeps.expand([0], {"temperature": [0.05, 0.5]}, agent.hyper)
    states = jax.vmap(agent.init)(sweeps.run_keys(runs), sweeps.hyper_per_run(agent.hyper, runs))
    key = jax.random.PRNGKey(5)
    swept, _ = jax.jit(jax.vmap(agent.update, (0, None, None)))(states, key, batch)
    for i, temperature in enumerate((0.05, 0.5)):
        single = agent.init(jax.random.PRNGKey(0), agent.hyper.replace(temperature=temperature))
        single, _ = jax.jit(agent.update)(single, key, batch)
        for a, b in zip(jax.tree.leaves(single.actor_params), jax.tree.leaves(swept.actor_params), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=2e-5, atol=2e-6)
    differ = [not np.allclose(x[0], x[1]) for x in jax.tree.leaves(swept.actor_params)]
    assert any(differ)


@pytest.mark.slow
def test_qne_is_rfm_with_a_diffusion_policy_and_eta_zero():
    """QNE's update is RFM's with policy="diffusion", control_variate="none" (the eta = 0 estimator)
    and the DDIM's clean latent clipped at U_MAX: the same parameters after three updates from the
    same keys."""
    kwargs = dict(obs_dim=OBS, action_dim=ACT, **tiny("qne"))
    qne = make_agent("qne", **kwargs)
    assert kwargs["x1_bound"] == particles.U_MAX and "control_variate" not in kwargs
    rfm = make_agent("rfm", policy="diffusion", control_variate="none", **kwargs)  # kwargs: cosine, 20 steps, clip
    batch = _batch(jax.random.PRNGKey(1))
    states = [agent.init(jax.random.PRNGKey(0), agent.hyper) for agent in (qne, rfm)]
    for step in range(3):
        key = jax.random.PRNGKey(10 + step)
        states = [jax.jit(agent.update)(state, key, batch)[0] for agent, state in zip((qne, rfm), states, strict=True)]
    jax.tree.map(np.testing.assert_array_equal, states[0].actor_params, states[1].actor_params)
    assert qne.name == "qne"
    with pytest.raises(ValueError, match="control_variate"):
        make_agent("qne", control_variate="optimal", **kwargs)
    with pytest.raises(ValueError, match="^make_qne: `num_posterior_particles`"):
        make_agent("qne", **{**kwargs, "num_posterior_particles": 0})


@pytest.mark.slow
def test_dqs_is_rfm_with_a_ve_diffusion_policy_and_eta_one():
    """DQS's update is RFM's with policy="diffusion" on the VE path and the fixed eta = 1 estimator
    (the score network's sigma^2-weighted loss is the epsilon loss): the same parameters after
    three updates from the same keys; its factory and hyper check name themselves."""
    kwargs = dict(obs_dim=OBS, action_dim=ACT, **tiny("dqs"))
    dqs = make_agent("dqs", **kwargs)
    rfm = make_agent("rfm", policy="diffusion", diffusion_schedule="ve", control_variate="fixed",
                     coef_space="noise", **kwargs)
    assert dqs.name == "dqs" and float(dqs.hyper.eta) == 1.0 and float(dqs.hyper.temperature) == 0.05
    batch = _batch(jax.random.PRNGKey(1))
    states = [agent.init(jax.random.PRNGKey(0), dqs.hyper) for agent in (dqs, rfm)]
    for step in range(3):
        key = jax.random.PRNGKey(10 + step)
        states = [jax.jit(agent.update)(state, key, batch)[0] for agent, state in zip((dqs, rfm), states, strict=True)]
    jax.tree.map(np.testing.assert_array_equal, states[0].actor_params, states[1].actor_params)
    with pytest.raises(ValueError, match="^make_dqs: `diffusion_schedule` is fixed"):
        make_agent("dqs", diffusion_schedule="cosine", **kwargs)
    with pytest.raises(ValueError, match="^make_dqs: `num_ode_steps`"):
        make_agent("dqs", **{**kwargs, "num_ode_steps": 0})
    with pytest.raises(ValueError, match="^dqs: `hyper.temperature`"):
        dqs.check_hyper(dqs.hyper.replace(temperature=0.0))


def test_grad_clip_none_turns_clipping_off_and_bad_values_are_named():
    """grad_clip: a number > 0 clips, None / "none" / inf do not (the gradient passes unchanged)."""
    grads = {"w": jnp.full((3,), 100.0)}
    clipped, _ = base.gradient_clip("f", 10.0).update(grads, None)
    assert np.isclose(float(jnp.linalg.norm(clipped["w"])), 10.0, rtol=1e-6)
    for off in (None, "none", "None", float("inf"), "inf"):
        same, _ = base.gradient_clip("f", off).update(grads, base.gradient_clip("f", off).init(grads))
        np.testing.assert_array_equal(same["w"], grads["w"])
    for bad in (0.0, -1.0, "abc", True, float("nan")):
        with pytest.raises(ValueError, match="^make_rfm: `grad_clip` must be a number > 0, or none"):
            make_agent("rfm", obs_dim=OBS, action_dim=ACT, **{**tiny("rfm"), "grad_clip": bad})
    make_agent("rfm", obs_dim=OBS, action_dim=ACT, **{**tiny("rfm"), "grad_clip": "none"})


def test_x1_bound_is_for_the_diffusion_policy_only():
    with pytest.raises(ValueError, match="^make_rfm: `x1_bound` applies to the diffusion policy only"):
        make_agent("rfm", obs_dim=OBS, action_dim=ACT, **{**tiny("rfm"), "x1_bound": 3.0})
    with pytest.raises(ValueError, match="^make_qne: `x1_bound` must be finite and > 0"):
        make_agent("qne", obs_dim=OBS, action_dim=ACT, **{**tiny("qne"), "x1_bound": -1.0})
