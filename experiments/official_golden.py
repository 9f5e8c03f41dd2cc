"""Golden numbers of one RFM update made by the authors' code, for ``tests/agents/test_golden.py``.

Run it from a checkout of azizanlab/ReverseFlowMatching, in that code's own virtual environment
(jax 0.6.2, flax 0.10.7, optax 0.2.6; see experiments/official.py), never from rfm_jax's:

    cd ReverseFlowMatching && venv/bin/python /path/to/rfm_jax/experiments/official_golden.py \\
        /path/to/rfm_jax/tests/fixtures/official_update_small.npz

It builds their ``RFM`` agent at small shapes, runs one update to give Adam a non-trivial state
(Adam's first step is g / |g|, which turns float32 rounding of tiny gradients into whole steps),
then records the inputs of a second update (parameters, optimiser states, batch, temperature),
the noise that update draws (re-derived from its key exactly as their ``_fused_update`` splits
it, and checked against their own functions), its outputs (new parameters, optimiser states,
metrics) and its intermediates through their component functions: the sampler's candidates,
their Q values and Boltzmann choice, the greedy choice, the critic target, the posterior means,
the actor target, loss and gradient.  Only numbers are saved, with the commit of their code,
the versions and the shapes; none of their code.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.getcwd())  # their checkout: run from its root

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from src.agent.critic import get_q_values
from src.agent.rfm import RFM, make_posterior_mean_fns_for_q

OBS, ACT, K, P, STEPS, WIDTH, EMBED, CRITIC, BATCH = 5, 2, 8, 4, 3, 32, 8, 32, 8
TEMPERATURE, T_MIN, CV_CLIP, RIDGE, GAMMA, TAU = 0.05, 0.01, 2.0, 1e-4, 0.99, 0.005
ACTOR_LR, CRITIC_LR, CLIP = 3e-4, 1e-3, 10.0


def flat(prefix, tree, out):
    for path, leaf in traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/").items():
        out[f"{prefix}/{path}"] = np.asarray(leaf)


def flat_opt(prefix, opt_state, out):
    """Adam's count, mu and nu of an ``optax.adam`` state (possibly with a leading critic axis)."""
    adam = opt_state[0]
    out[f"{prefix}/count"] = np.asarray(adam.count)
    flat(f"{prefix}/mu", adam.mu, out)
    flat(f"{prefix}/nu", adam.nu, out)


def main(path):
    critic = dict(state_dim=OBS, action_dim=ACT, hidden_size=CRITIC, hidden_layers=2, num_q=2, discount=GAMMA,
                  tau=TAU, target_update_period=1, lr=CRITIC_LR, max_grad_norm=CLIP, seed=0)
    agent = RFM(sample_dim=ACT, state_dim=OBS, critic_config=critic, actor_hidden_size=WIDTH, actor_hidden_layers=2,
                actor_emb_size=EMBED, actor_lr=ACTOR_LR, actor_max_grad_norm=CLIP, num_estimator_mc_samples=K,
                num_integration_steps=STEPS, batch_size=BATCH, cv_weight=0.0, cv_weight_autotune=True, cv_ridge=RIDGE,
                cv_clip=CV_CLIP, rfm_on_policy=True, init_temperature=TEMPERATURE, final_temperature=TEMPERATURE,
                temperature_steps=250000, num_particles_training=P, num_particles_data=P, num_particles_eval=P,
                sampler_method="euler", t_min=T_MIN, seed=0)
    rng = np.random.default_rng(0)

    def batch():
        return (rng.standard_normal((BATCH, OBS)).astype(np.float32),
                rng.uniform(-0.95, 0.95, (BATCH, ACT)).astype(np.float32),
                rng.standard_normal(BATCH).astype(np.float32), (rng.uniform(size=BATCH) > 0.2).astype(np.float32),
                rng.standard_normal((BATCH, OBS)).astype(np.float32))

    agent.update(*batch())  # warms Adam's moments (the recorded update is the second)
    out = {}
    states, actions, rewards, masks, next_states = b = batch()
    for name, value in zip(("obs", "action", "reward", "discount", "next_obs"), b, strict=True):
        out[f"batch/{name}"] = value
    net0, q0, qt0 = agent.net_params, agent.critic.Q_online_params, agent.critic.Q_target_params
    flat("actor", net0, out)
    flat("critic", q0, out)
    flat("target_critic", qt0, out)
    flat_opt("actor_opt", agent.net_optimizer_state, out)
    flat_opt("critic_opt", agent.critic.optimizer_state_q, out)
    key = agent.key
    out["updates"] = np.asarray(agent.step)
    out["temperature"] = np.float32(TEMPERATURE)

    # The noise of _fused_update, split from its key as it splits it.
    _, key_t, key_noise, key_mc, key_sample = jax.random.split(key, 5)
    key_action, key_next_action = jax.random.split(key_sample)
    temp = jnp.exp(jnp.log(TEMPERATURE) + 0.0 * agent.step)
    for name, k, s in (("obs", key_action, states), ("next_obs", key_next_action, next_states)):
        key_init, key_cat = jax.random.split(k)
        start = jax.random.normal(key_init, (BATCH * P, ACT), dtype=jnp.float32)
        # Their sampler with one particle per row integrates exactly these starts (same key, same shape).
        s_rep = jnp.repeat(jnp.asarray(s), P, axis=0)
        latents, _ = agent._sample_latent_actions_flow_fn(net0, q0, k, s_rep, temp, num_particles=1, method="euler")
        q = get_q_values(agent.critic.Q_module, q0, s_rep, jnp.tanh(latents)).reshape(BATCH, P)
        gumbel = jax.random.gumbel(key_cat, (BATCH, P), jnp.float32)
        chosen, _ = agent._sample_latent_actions_flow_fn(net0, q0, k, s, temp, num_particles=P, method="euler")
        index = jnp.argmax((q - q.max(axis=1, keepdims=True)) / temp + gumbel, axis=1)
        expected = latents.reshape(BATCH, P, ACT)[jnp.arange(BATCH), index]
        assert np.array_equal(np.asarray(chosen), np.asarray(expected)), "the re-derived noise misses their choice"
        # Their greedy sampler draws its starts from the key it is given: key_init gives the same starts.
        greedy = agent._sample_actions_flow_argmax_fn(net0, q0, key_init, s, temp, num_particles=P, method="euler")
        out[f"noise/x_start_{name}"] = np.asarray(start.reshape(BATCH, P, ACT))
        out[f"noise/gumbel_{name}"] = np.asarray(gumbel)
        out[f"sampler/latents_{name}"] = np.asarray(latents.reshape(BATCH, P, ACT))
        out[f"sampler/q_{name}"] = np.asarray(q)
        out[f"sampler/boltzmann_index_{name}"] = np.asarray(index)
        out[f"sampler/greedy_action_{name}"] = np.asarray(greedy)
        out[f"sampler/chosen_{name}"] = np.asarray(chosen)
    u1, u_next = out["sampler/chosen_obs"], out["sampler/chosen_next_obs"]
    t = jax.random.uniform(key_t, (BATCH,), minval=T_MIN, maxval=1.0 - T_MIN)
    x0 = jax.random.normal(key_noise, (BATCH, ACT))
    particles = jnp.stack([jax.random.normal(jax.random.split(k)[0], (K, ACT), dtype=jnp.float32)
                           for k in jax.random.split(key_mc, BATCH)])
    out["noise/t"], out["noise/x0"], out["noise/particles"] = np.asarray(t), np.asarray(x0), np.asarray(particles)

    # Critic target with the pre-update target critics, as their update_q forms it.
    next_inputs = jnp.concatenate([next_states, jnp.tanh(u_next)], -1)
    target_q = jnp.min(jax.vmap(lambda p: agent.critic.Q_module.apply(p, next_inputs))(qt0), 0)
    out["critic/target"] = np.asarray(rewards + GAMMA * masks * target_q)

    # The whole update, by their code.
    metrics = agent.update(states, actions, rewards, masks, next_states)
    flat("new/actor", agent.net_params, out)
    flat("new/critic", agent.critic.Q_online_params, out)
    flat("new/target_critic", agent.critic.Q_target_params, out)
    flat_opt("new/actor_opt", agent.net_optimizer_state, out)
    flat_opt("new/critic_opt", agent.critic.optimizer_state_q, out)
    for name, value in metrics.items():
        out[f"metrics/{name}"] = np.asarray(value)

    # The posterior with the post-update critics and the recorded particles, by their estimator.
    y_t = t[:, None] * u1 + (1.0 - t)[:, None] * x0
    cfg = agent.posterior_cfg
    fixed = {"i": 0}

    def source(key, shape, dtype):  # their source_distribution hook, fed the recorded particles
        return particles[fixed["i"]].astype(dtype)

    per_sample, _ = make_posterior_mean_fns_for_q(agent.critic.Q_module, cfg, source_distribution=source)
    y0_post, y1_post, cv = [], [], []
    for i in range(BATCH):
        fixed["i"] = i
        a, b_, stats = per_sample(jax.random.PRNGKey(0), agent.critic.Q_online_params, temp, t[i], y_t[i],
                                  jnp.asarray(states[i]))
        y0_post.append(a), y1_post.append(b_), cv.append(stats[0])
    y0_post, y1_post = jnp.stack(y0_post), jnp.stack(y1_post)
    out["posterior/x_t"], out["posterior/noise_mean"] = np.asarray(y_t), np.asarray(y0_post)
    out["posterior/data_mean"] = np.asarray(y1_post)
    out["posterior/coef_mean"] = np.asarray(jnp.stack(cv))
    target = y1_post - y0_post
    out["actor/target"] = np.asarray(target)

    def loss_fn(params):  # their update_actor_flow_matching's loss
        pred = agent.net.apply(params, t, y_t, jnp.asarray(states), temp * jnp.ones_like(t))
        return jnp.mean((pred - target) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(net0)
    out["actor/loss"] = np.asarray(loss)
    flat("actor/grad", grads, out)
    assert np.allclose(loss, metrics["actor_loss"], rtol=1e-5), (loss, metrics["actor_loss"])
    # Their reported norm is the clipped gradient's.
    assert np.allclose(min(optax.global_norm(grads), CLIP), metrics["actor_grad_norm"], rtol=1e-5)

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out["provenance"] = np.asarray(json.dumps({
        "code": "azizanlab/ReverseFlowMatching", "commit": commit, "jax": jax.__version__, "flax": flax.__version__,
        "optax": optax.__version__, "made_by": "experiments/official_golden.py",
        "shapes": dict(obs=OBS, act=ACT, posterior_particles=K, policy_particles=P, euler_steps=STEPS, width=WIDTH,
                       embed=EMBED, critic_hidden=[CRITIC, CRITIC], batch=BATCH),
        "settings": dict(temperature=TEMPERATURE, t_min=T_MIN, cv_clip=CV_CLIP, ridge=RIDGE, gamma=GAMMA, tau=TAU,
                         actor_lr=ACTOR_LR, critic_lr=CRITIC_LR, grad_clip=CLIP)}))
    np.savez_compressed(path, **out)
    print(f"wrote {len(out)} arrays to {path}")


if __name__ == "__main__":
    main(sys.argv[1])
