"""``temperature_mode`` ess and entropy in every agent with a Boltzmann lambda (RFM, QNE, DQS,
QVPO): lambda lives in the state and each update takes exactly the dual-ascent step of
``rfm_jax.method.temperature`` on the update's own ESS fraction or entropy estimate, within the
bounds; the entropy estimate is the closed form for a zero network; bad settings are one line."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import presets
import pytest

from rfm_jax.agents import REGISTRY, make_agent, particles
from rfm_jax.agents import rfm as rfm_agent
from rfm_jax.training.replay import Transition

OBS, ACT, BATCH = 4, 2, 16
BOLTZMANN = [name for name in sorted(REGISTRY) if name not in ("sac", "qsm")]


def _batch(key):
    k_obs, k_act, k_next = jax.random.split(key, 3)
    obs = jax.random.normal(k_obs, (BATCH, OBS))
    action = jnp.tanh(jax.random.normal(k_act, (BATCH, ACT)))
    reward = -jnp.sum((action - 0.3 * obs[:, :ACT]) ** 2, axis=-1)
    return Transition(obs, action, reward, jnp.full((BATCH,), 0.9), jax.random.normal(k_next, (BATCH, OBS)))


def _updates(agent, hyper, steps=4):
    state = agent.init(jax.random.PRNGKey(0), hyper)
    batch = _batch(jax.random.PRNGKey(1))
    update = jax.jit(agent.update)
    out = []
    for key in jax.random.split(jax.random.PRNGKey(2), steps):
        before = state
        state, metrics = update(state, key, batch)
        out.append((before, state, metrics))
    return out


@pytest.mark.parametrize("name", BOLTZMANN)
@pytest.mark.parametrize("mode", ["ess", "entropy"])
@pytest.mark.slow
def test_each_update_takes_the_dual_ascent_step_on_its_own_estimate(name, mode):
    agent = make_agent(name, obs_dim=OBS, action_dim=ACT, **{**presets.settings(name), "temperature_mode": mode})
    hyper = agent.hyper.replace(temperature=0.05, temperature_lr=0.5)
    for before, after, metrics in _updates(agent, hyper):
        lam = float(jnp.exp(before.log_temperature))
        np.testing.assert_allclose(float(metrics["temperature"]), lam, rtol=1e-6)  # the state's lambda is used
        if mode == "ess":
            error = float(hyper.ess_target) - float(metrics["policy_ess_frac"])
        else:
            error = (-float(hyper.entropy_target_scale) * ACT - float(metrics["policy_entropy"])) / ACT
        expected = np.clip(math.log(lam) + 0.5 * error, math.log(1e-4), math.log(10.0))
        np.testing.assert_allclose(float(after.log_temperature), expected, rtol=1e-5, atol=1e-6)
        assert 0.0 < float(metrics["policy_ess_frac"]) <= 1.0


def test_the_fixed_mode_keeps_the_schedule_and_logs_the_ess_fraction():
    agent = make_agent("rfm", obs_dim=OBS, action_dim=ACT, **{**presets.settings("rfm"), "temperature_mode": "fixed"})
    hyper = agent.hyper.replace(temperature=0.1, temperature_final=0.01, temperature_steps=2.0)
    lams = [float(m["temperature"]) for _, _, m in _updates(agent, hyper)]
    np.testing.assert_allclose(lams, [0.1, math.sqrt(0.1 * 0.01), 0.01, 0.01], rtol=1e-5)
    assert all(0.0 < float(m["policy_ess_frac"]) <= 1.0 for _, _, m in _updates(agent, hyper, 1))


def test_the_bounds_hold_lambda():
    agent = make_agent("rfm", obs_dim=OBS, action_dim=ACT, **{**presets.settings("rfm"), "temperature_mode": "ess"})
    hyper = agent.hyper.replace(temperature=0.05, temperature_lr=100.0, ess_target=1.0, temperature_max=0.2)
    _, after, _ = _updates(agent, hyper, 1)[0]
    np.testing.assert_allclose(float(jnp.exp(after.log_temperature)), 0.2, rtol=1e-6)


def test_a_zero_flow_network_has_the_entropy_of_a_squashed_standard_normal():
    """Zero parameters: v = 0, so u = u0 ~ N(0, I) and H = |A| (0.5 log(2 pi e) + E log(1 - tanh^2 z)),
    the expectation by quadrature; the estimate over 4000 states is within 4 standard errors."""
    agent = make_agent("rfm", obs_dim=OBS, action_dim=ACT, **{**presets.settings("rfm"), "temperature_mode": "entropy"})
    state = agent.init(jax.random.PRNGKey(0), agent.hyper)
    params = jax.tree.map(jnp.zeros_like, state.actor_params)
    s = agent.settings
    ode = dict(policy="flow", schedule=None, num_steps=s.num_ode_steps, t_min=s.t_min)
    net = rfm_agent.PolicyNet(OBS, ACT, s.actor_width, s.actor_blocks, s.actor_embed_dim, s.actor_block)

    def model_fn_at(obs):
        return lambda x, t: net.apply(params, obs, x, t, jnp.float32(0.05))

    obs = jax.random.normal(jax.random.PRNGKey(1), (4000, OBS))
    log_p = jax.jit(jax.vmap(lambda o, x: particles.sample_log_prob(model_fn_at(o), x, **ode)[1]))(
        obs, jax.random.normal(jax.random.PRNGKey(2), (4000, ACT)))
    z = np.linspace(-12, 12, 200_001)
    density = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    e_log = np.trapezoid(density * np.log1p(-np.tanh(z) ** 2), z)
    exact = ACT * (0.5 * math.log(2 * math.pi * math.e) + e_log)
    error = 4 * float(jnp.std(log_p)) / math.sqrt(4000)
    assert abs(float(-jnp.mean(log_p)) - exact) < error, (float(-jnp.mean(log_p)), exact)
    entropy = particles.policy_entropy(jax.random.PRNGKey(3), net, params, jnp.float32(0.05), obs, **ode)
    assert abs(float(entropy) - exact) < error


def test_bad_temperature_settings_are_one_line_naming_the_field():
    with pytest.raises(ValueError, match="`temperature_mode` must be one of"):
        make_agent("rfm", obs_dim=OBS, action_dim=ACT, temperature_mode="auto")
    with pytest.raises(ValueError, match="unknown setting `temperature_mode`"):
        make_agent("qsm", obs_dim=OBS, action_dim=ACT, temperature_mode="ess")
    agent = make_agent("rfm", obs_dim=OBS, action_dim=ACT, **{**presets.settings("rfm"), "temperature_mode": "ess"})
    with pytest.raises(ValueError, match="temperature_final"):
        agent.init(jax.random.PRNGKey(0), agent.hyper.replace(temperature_final=0.01))
    for field, value in (("ess_target", 0.0), ("temperature_lr", -1.0), ("temperature_min", 0.0),
                         ("temperature_max", 1e-5)):
        with pytest.raises(ValueError, match=f"`hyper.{field}`"):
            agent.check_hyper(agent.hyper.replace(**{field: value}))
