"""rfm_jax's RFM update against golden numbers from the authors' code (tests/fixtures/
official_update_small.npz, made by experiments/official_golden.py in a checkout of
azizanlab/ReverseFlowMatching; its provenance is stored in the file).  The same parameters, batch
and noise go through rfm_jax, component by component and then as one whole ``agent.update``.

Tolerances: float32 through a few hundred operations in a different order (rfm_jax's products,
``sin_cos`` and argmin-only input gradient against plain flax) differ by ~1e-6 relative; 2e-5
relative plus a small absolute floor covers that and is far below any modelling difference (a
changed clip, ridge, Jacobian term or critic input moves these numbers by 1e-3 or more).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfm_jax.agents import base, make_agent, particles
from rfm_jax.agents.rfm import UpdateNoise
from rfm_jax.method import losses, schedules
from rfm_jax.method.estimators import posterior_mean, tanh_boltzmann_log_prob
from rfm_jax.networks import CriticEnsemble, PolicyNet, min_critic
from rfm_jax.training import replay

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "official_update_small.npz")
F = dict(np.load(FIXTURE))
PROV = json.loads(str(F["provenance"]))
S, SET = PROV["shapes"], PROV["settings"]
RTOL, ATOL = 2e-5, 2e-6

# The authors' parameter names (flax auto-names) -> rfm_jax's.
ACTOR = {"kernel_in": "Dense_0/kernel", "bias_in": "Dense_0/bias", "block_0/kernel": "Block_0/Dense_0/kernel",
         "block_0/bias": "Block_0/Dense_0/bias", "block_1/kernel": "Block_1/Dense_0/kernel",
         "block_1/bias": "Block_1/Dense_0/bias", "head/kernel": "Dense_1/kernel", "head/bias": "Dense_1/bias"}
CRITIC = {"kernel_0": "NormedLinear_0/Dense_0/kernel", "bias_0": "NormedLinear_0/Dense_0/bias",
          "kernel_1": "NormedLinear_1/Dense_0/kernel", "bias_1": "NormedLinear_1/Dense_0/bias",
          "kernel_2": "Dense_0/kernel", "bias_2": "Dense_0/bias"}


def tree(prefix: str, names: dict) -> dict:
    """{'params': {...}} in rfm_jax's layout from the fixture's arrays under ``prefix``."""
    params = {}
    for ours, theirs in names.items():
        node = params
        *path, leaf = ours.split("/")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(F[f"{prefix}/params/{theirs}"])
    return {"params": params}


def assert_close(actual, expected, what, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol, err_msg=what)


def assert_data_close(actual, expected, t, what):
    """For data-space values, mu1 = (x_t - beta mu0) / alpha: float32 rounding of mu0 grows by
    beta / alpha = (1 - t) / t on the linear path (8 at this batch's smallest t)."""
    ratio = np.maximum(1.0, np.asarray((1 - t) / t))[:, None]
    error = np.abs(np.asarray(actual) - expected)
    assert np.all(error <= 1e-5 * ratio + RTOL * np.abs(expected)), (what, error.max())


def assert_tree_close(actual, prefix, names, what, **tol):
    expected = tree(prefix, names)
    for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
        got = actual
        for part in path:
            got = got[part.key]
        assert_close(got, leaf, f"{what} {jax.tree_util.keystr(path)}", **tol)


def batch() -> replay.Transition:
    names = ("obs", "action", "reward", "discount", "next_obs")
    return replay.Transition(*(jnp.asarray(F[f"batch/{n}"]) for n in names))


ACTOR_NET = PolicyNet(S["obs"], S["act"], S["width"], 2, S["embed"])
CRITICS = CriticEnsemble(2, tuple(S["critic_hidden"]))
TEMPERATURE = jnp.float32(F["temperature"])


def q_min(params, obs, action):
    return jnp.min(CRITICS.apply(params, obs, action), axis=-1)


def test_fixture_provenance_names_the_authors_commit():
    assert PROV["code"] == "azizanlab/ReverseFlowMatching" and len(PROV["commit"]) == 40
    assert F["noise/particles"].shape == (S["batch"], S["posterior_particles"], S["act"])


@pytest.mark.parametrize("which", ["obs", "next_obs"])
def test_sampler_candidates_and_selection_match(which):
    """Euler from the same starts, Q of the candidates, the Boltzmann choice given the Gumbel noise
    and the greedy choice: the agent's own path (``condition`` / ``from_condition``, min critic)."""
    params, critic = tree("actor", ACTOR), tree("critic", CRITIC)
    obs = jnp.asarray(F[f"batch/{which}"])
    ode = dict(policy="flow", schedule=schedules.linear(), num_steps=S["euler_steps"], t_min=SET["t_min"])

    def one(obs_i, x_start, gumbel, greedy):
        cond = ACTOR_NET.apply(params, obs_i, TEMPERATURE, method=ACTOR_NET.condition)
        model_fn = lambda x, t: ACTOR_NET.apply(params, cond, x, t, method=ACTOR_NET.from_condition)  # noqa: E731
        latents = particles.integrate(model_fn, x_start, **ode)
        chosen = particles.sample_select(None, model_fn, lambda a: q_min(critic, obs_i, a),
                                         num_particles=S["policy_particles"], action_dim=S["act"],
                                         temperature=TEMPERATURE, greedy=greedy,
                                         noise=particles.SampleNoise(x_start, gumbel), **ode)[0]
        return latents, q_min(critic, obs_i, jnp.tanh(latents)), chosen

    run = jax.jit(jax.vmap(one, (0, 0, 0, None)), static_argnums=3)
    starts, gumbel = jnp.asarray(F[f"noise/x_start_{which}"]), jnp.asarray(F[f"noise/gumbel_{which}"])
    latents, q, chosen = run(obs, starts, gumbel, False)
    assert_close(latents, F[f"sampler/latents_{which}"], "ODE latents")
    assert_close(q, F[f"sampler/q_{which}"], "Q of the candidates")
    assert_close(chosen, F[f"sampler/chosen_{which}"], "Boltzmann choice")
    _, _, greedy = run(obs, starts, gumbel, True)
    assert_close(jnp.tanh(greedy), F[f"sampler/greedy_action_{which}"], "greedy action")


def test_critic_step_matches():
    agent = make_agent("rfm", **agent_kwargs())
    params, target = tree("critic", CRITIC), tree("target_critic", CRITIC)
    state = initial_state(agent)
    u_next = jnp.asarray(F["sampler/chosen_next_obs"])
    b = batch()
    target_q_t = CRITICS.apply(target, b.next_obs, jnp.tanh(u_next))
    y = b.reward + SET["gamma"] * b.discount * jnp.min(target_q_t, axis=-1)
    assert_close(y, F["critic/target"], "TD target")
    critics = base.make_critics(num_critics=2, hidden=tuple(S["critic_hidden"]), lr=SET["critic_lr"],
                                grad_clip=SET["grad_clip"])
    new, opt_state, metrics = jax.jit(critics.step)(params, state.critic_opt_state, b, target_q_t, SET["gamma"])
    assert_tree_close(new, "new/critic", CRITIC, "critic params")
    assert_close(metrics["critic_loss"], F["metrics/q_loss"], "critic loss")


def regression_inputs():
    critic = tree("new/critic", CRITIC)  # the estimator uses the critics after their step
    noise = losses.RegressionNoise(jnp.asarray(F["noise/t"]), jnp.asarray(F["noise/x0"]),
                                   jnp.asarray(F["noise/particles"]))
    return critic, noise


def test_posterior_means_and_coefficients_match():
    critic, noise = regression_inputs()
    x_t = jnp.asarray(F["posterior/x_t"])

    def one(obs, x_t_i, t, particles):
        log_prob = tanh_boltzmann_log_prob(lambda a: min_critic.q_min(critic, obs, a), TEMPERATURE)
        return posterior_mean(None, log_prob, x_t_i, t, schedule=schedules.linear(),
                              num_particles=S["posterior_particles"], control_variate="optimal", ridge=SET["ridge"],
                              clip=SET["cv_clip"], coef_space="data", particles=particles)

    est = jax.jit(jax.vmap(one))(batch().obs, x_t, noise.t, noise.particles)
    assert_close(est.noise_mean, F["posterior/noise_mean"], "noise posterior mean", atol=1e-5)
    assert_data_close(est.data_mean, F["posterior/data_mean"], noise.t, "data posterior mean")
    assert_close(jnp.mean(est.coef, axis=-1), F["posterior/coef_mean"], "data-space coefficient", atol=1e-5)


def test_actor_target_loss_and_gradient_match():
    critic, noise = regression_inputs()
    u1 = jnp.asarray(F["sampler/chosen_obs"])
    obs = batch().obs

    def loss(params):
        def one(obs_i, u1_i, noise_i):
            log_prob = tanh_boltzmann_log_prob(lambda a: min_critic.q_min(critic, obs_i, a), TEMPERATURE)
            model_fn = lambda x, t: ACTOR_NET.apply(params, obs_i, x, t, TEMPERATURE)  # noqa: E731
            return losses.rfm_velocity_loss(None, model_fn, log_prob, u1_i, schedule=schedules.linear(),
                                            t_min=SET["t_min"], num_particles=S["posterior_particles"],
                                            control_variate="optimal", ridge=SET["ridge"], clip=SET["cv_clip"],
                                            coef_space="data", noise=noise_i)

        per_example, aux = jax.vmap(one)(obs, u1, noise)
        return jnp.mean(per_example), aux

    (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(tree("actor", ACTOR))
    assert_close(aux.x_t, F["posterior/x_t"], "x_t")
    assert_data_close(aux.target, F["actor/target"], noise.t, "velocity target")
    assert_close(value, F["actor/loss"], "actor loss")
    assert_tree_close(grads, "actor/grad", ACTOR, "actor gradient", atol=1e-5)


def agent_kwargs() -> dict:
    return dict(obs_dim=S["obs"], action_dim=S["act"], num_posterior_particles=S["posterior_particles"],
                num_train_particles=S["policy_particles"], num_act_particles=S["policy_particles"],
                num_eval_particles=S["policy_particles"], num_ode_steps=S["euler_steps"], t_min=SET["t_min"],
                actor_width=S["width"], actor_blocks=2, actor_embed_dim=S["embed"],
                critic_hidden=tuple(S["critic_hidden"]), actor_lr=SET["actor_lr"], critic_lr=SET["critic_lr"],
                grad_clip=SET["grad_clip"], temperature_mode="fixed", control_variate="optimal")  # the authors


def adam(prefix, names, like):
    """Their Adam moments as an rfm_jax optimiser state shaped ``like`` (clip, then Adam)."""
    clip_state, (adam_state, *rest) = like
    mu, nu = tree(f"{prefix}/mu", names), tree(f"{prefix}/nu", names)
    count = jnp.asarray(F[f"{prefix}/count"]).astype(adam_state.count.dtype)
    return (clip_state, (adam_state._replace(count=count, mu=mu, nu=nu), *rest))


def initial_state(agent):
    state = agent.init(jax.random.PRNGKey(0), agent.hyper.replace(
        temperature=SET["temperature"], gamma=SET["gamma"], tau=SET["tau"], ridge=SET["ridge"], clip=SET["cv_clip"]))
    return state.replace(
        actor_params=tree("actor", ACTOR), critic_params=tree("critic", CRITIC),
        target_critic_params=tree("target_critic", CRITIC),
        actor_opt_state=adam("actor_opt", ACTOR, state.actor_opt_state),
        critic_opt_state=adam("critic_opt", CRITIC, state.critic_opt_state),
        updates=jnp.asarray(F["updates"], jnp.int32))


def test_one_whole_update_matches():
    """``agent.update`` with every draw given: new actor, critics, targets, Adam moments, losses."""
    agent = make_agent("rfm", **agent_kwargs())
    state = initial_state(agent)
    noise = UpdateNoise(
        x_start=jnp.concatenate([F["noise/x_start_obs"], F["noise/x_start_next_obs"]]),
        gumbel=jnp.concatenate([F["noise/gumbel_obs"], F["noise/gumbel_next_obs"]]),
        t=jnp.asarray(F["noise/t"]), x0=jnp.asarray(F["noise/x0"]), particles=jnp.asarray(F["noise/particles"]))
    new, metrics = jax.jit(agent.update)(state, jax.random.PRNGKey(0), batch(), noise)
    assert_tree_close(new.actor_params, "new/actor", ACTOR, "actor params")
    assert_tree_close(new.critic_params, "new/critic", CRITIC, "critic params")
    assert_tree_close(new.target_critic_params, "new/target_critic", CRITIC, "target critic params")
    for prefix, names, opt in (("new/actor_opt", ACTOR, new.actor_opt_state),
                               ("new/critic_opt", CRITIC, new.critic_opt_state)):
        adam_state = opt[1][0]
        assert_tree_close(adam_state.mu, f"{prefix}/mu", names, f"{prefix} mu", atol=1e-6)
        assert_tree_close(adam_state.nu, f"{prefix}/nu", names, f"{prefix} nu", rtol=1e-4, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(adam_state.count), F[f"{prefix}/count"])
    assert_close(metrics["critic_loss"], F["metrics/q_loss"], "critic loss")
    assert_close(metrics["actor_loss"], F["metrics/actor_loss"], "actor loss")
    assert_close(metrics["ess_mean"], F["metrics/posterior_ess"], "mean ESS", rtol=1e-4)
    assert_close(metrics["temperature"], F["metrics/temperature"], "temperature")


@pytest.mark.skipif(os.environ.get("RFM_JAX_GOLDEN_CHILD") == "1", reason="this is the child run")
@pytest.mark.slow
def test_golden_updates_match_on_plain_jax():
    """The tests above again in a process on plain JAX (RFM_JAX_PLAIN=1: no speed device of
    rfm_jax._speed, no XLA CPU flag defaults)."""
    import subprocess
    import sys

    from rfm_jax.infra.runtime import environment_plain

    env = {**environment_plain(), "RFM_JAX_GOLDEN_CHILD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                           os.path.abspath(__file__)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "7 passed, 1 skipped" in proc.stdout, proc.stdout[-500:]
