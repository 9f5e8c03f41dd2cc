"""QVPO (Q-weighted variational policy optimisation; docs/method.md section 8): a cosine-VP
diffusion policy trained by the plain denoising loss on its own samples, weighted by how much
better than average each sample is under the critics.  Pure ``init`` / ``act`` / ``update`` on one
seed, with RFM's state, network and critic core.

One update on a batch of B transitions, P = ``num_train_particles`` policy samples per state:

1. Sample P latents u_i per state with DDIM at s and s' in one pass (each step's prediction of the
   clean latent clipped to |u| <= arctanh(0.999), as QVPO's sampler clips its denoised action;
   unclipped, the untrained network's samples saturate and the loss trains on them); with the critics BEFORE this
   update, q_bi = min_k Q_k(s_b, tanh u_bi), and a' at s' is drawn from softmax(q / lambda).
2. Critics: y = r + gamma * discount * min_k Qbar_k(s', tanh u'); per-critic loss, clip and Adam.
3. Actor: w_bi = max(q_bi - mean_i q_bi, 0) (the Q-weight; zero for below-average samples),
   normalised to mean 1 over the batch, and with l(u) = || eps_theta(s, u_t, t, lambda) - eps ||^2 / A
   at t ~ U[t_min, 1 - t_min], u_t = alpha_t u + beta_t eps (the denoising loss),

       loss = mean_{b,i} w_bi l(u_bi) + entropy_weight mean_{b,i} l(arctanh a~_bi),   a~ ~ U(-1, 1)^A

   The second term (QVPO's entropy regulariser) keeps denoising uniform actions, so that the
   policy does not collapse onto the samples it drew first.  Normalising the Q-weights makes
   ``entropy_weight`` independent of the reward scale.
4. Polyak: Qbar <- (1 - tau) Qbar + tau Q.

Acting: P_data samples and Boltzmann resampling (training data), or argmax-Q over P_eval samples
(``greedy=True``; QVPO's "efficient behaviour policy" selects the best of several samples too).

Departures from the QVPO paper, kept so that QVPO differs from RFM only in the actor target: the
policy lives in the tanh latent, the weights use the pre-update critics and are normalised over the batch,
and the uniform actions of the entropy term are drawn in (-0.999, 0.999) and mapped to the latent.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rfm_jax._speed import normal_rows
from rfm_jax.agents import base, particles
from rfm_jax.method import schedules
from rfm_jax.method.transition import Transition
from rfm_jax.method.validation import check_positive_int, check_rank
from rfm_jax.networks import PolicyNet

Array = jax.Array


@struct.dataclass
class QVPOHyper(particles.TemperatureHyper):
    """Sweepable numbers (pytree leaves); the automatic temperature's are
    ``particles.TemperatureHyper``'s."""

    temperature: Array | float = 0.02  # lambda of the Boltzmann resampling that picks a' and training actions
    entropy_weight: Array | float = 0.1  # weight of the denoising loss on uniform actions (QVPO's entropy term)
    gamma: Array | float = 0.99  # TD discount
    tau: Array | float = 0.005  # Polyak rate of the target critics


def check_hyper(hyper: QVPOHyper, name: str = "qvpo") -> None:
    """A one-line ValueError naming the first out-of-range field."""
    base.check_leaf(name, "temperature", hyper.temperature, lambda v: v > 0, "> 0")
    base.check_leaf(name, "entropy_weight", hyper.entropy_weight, lambda v: v >= 0, ">= 0")
    base.check_common_hyper(name, hyper)
    particles.check_temperature_hyper(name, hyper)


def q_weights(q: Array) -> Array:
    """w_i = max(q_i - mean_j q_j, 0).  q: [P] -> [P]."""
    check_rank("q_weights", "q", q, 1, "[P]")
    return jnp.maximum(q - jnp.mean(q), 0.0)


@dataclasses.dataclass(frozen=True)
class QVPOSettings(particles.TemperatureSettings, particles.PolicyNetSettings):
    """Static settings: ``particles.PolicyNetSettings``, ``particles.TemperatureSettings`` and QVPO's own."""

    num_train_particles: int = 64  # policy samples per state that the Q-weighted loss trains on (QVPO: 64)
    num_act_particles: int = 32  # policy samples per state when acting in training (Boltzmann-resampled)
    num_ode_steps: int = 20  # DDIM steps from t_min to 1 - t_min (QVPO: 20)
    sample_chunk: int | None = None  # sampler states per lax.map chunk; 0: one vmap; None: auto


def make_qvpo(*, obs_dim: int, action_dim: int, **settings) -> base.Agent:
    """QVPO's pure functions; ``settings`` override ``QVPOSettings``'s defaults (all static)."""
    return base.make(SPEC, obs_dim=obs_dim, action_dim=action_dim, **settings)


def build(s: QVPOSettings, *, obs_dim: int, action_dim: int, name: str = "make_qvpo") -> base.Agent:
    """The agent of settings ``s``; ``name`` names the factory in errors."""
    particles.check_policy_net(name, s, obs_dim, action_dim)
    check_positive_int(name, "num_act_particles", s.num_act_particles)
    check_positive_int(name, "num_train_particles", s.num_train_particles, 2)  # a mean needs two samples
    if s.sample_chunk not in (None, "auto"):
        check_positive_int(name, "sample_chunk", s.sample_chunk, minimum=0)

    critics = base.make_critics(num_critics=s.num_critics, hidden=s.critic_hidden, lr=s.critic_lr,
                                grad_clip=s.grad_clip, name=name)
    schedule = schedules.cosine()
    actor = PolicyNet(obs_dim, action_dim, s.actor_width, s.actor_blocks, s.actor_embed_dim, s.actor_block)
    actor_opt = optax.chain(base.gradient_clip(name, s.grad_clip), optax.adam(s.actor_lr))
    chunk = particles.resolve_sample_chunk(s.sample_chunk, s.num_train_particles)
    ode = dict(policy="diffusion", schedule=schedule, num_steps=s.num_ode_steps, t_min=s.t_min,
               x1_bound=particles.U_MAX)

    def init(key: Array, hyper: QVPOHyper) -> particles.ParticleState:
        return particles.init_state(key, hyper, actor=actor, actor_opt=actor_opt, critics=critics, obs_dim=obs_dim,
                          action_dim=action_dim)

    def samples(actor_params, critic_params, key, obs, temperature, num_particles):
        """P latents u [P, A] at one state obs [O] by DDIM, and their q = min_k Q_k(s, tanh u) [P]."""
        model_fn = particles.model_fn_at(actor, actor_params, temperature)(obs)
        u = particles.integrate(model_fn, normal_rows.normal(key, (num_particles, action_dim)), **ode)
        return u, jnp.min(critics.apply(critic_params, obs, jnp.tanh(u)), axis=-1)

    def act(state: particles.ParticleState, key: Array, obs: Array, greedy: bool = False) -> Array:
        check_rank("qvpo.act", "obs", obs, 1, "[O]")
        key_sample, key_select = jax.random.split(key)
        num_particles = s.num_eval_particles if greedy else s.num_act_particles
        temperature = particles.temperature_of(s.temperature_mode, state, state.hyper.temperature)
        u, q = samples(state.actor_params, state.critic_params, key_sample, obs, temperature, num_particles)
        return jnp.tanh(u[particles.select(key_select, q, temperature, greedy)])

    def denoising(actor_params, key, obs, u, temperature):
        """l(u) at one random t and noise per sample: obs [B, O], u [B, P, A] -> [B, P]."""
        key_t, key_noise = jax.random.split(key)
        t = jax.random.uniform(key_t, u.shape[:2], minval=s.t_min, maxval=1.0 - s.t_min)
        eps = normal_rows.normal(key_noise, u.shape)
        u_t = schedule.alpha(t)[..., None] * u + schedule.beta(t)[..., None] * eps
        eps_hat = actor.apply(actor_params, obs[:, None], u_t, t, temperature)
        return jnp.mean((eps_hat - eps) ** 2, axis=-1)

    def actor_step(state, key, obs, u, weights, temperature):
        """Q-weighted denoising regression on the samples u [B, P, A] with weights [B, P], plus the
        entropy term on as many uniform actions."""
        hyper = state.hyper
        key_q, key_uniform, key_entropy = jax.random.split(key, 3)
        weights = weights / jnp.maximum(jnp.mean(weights), 1e-12)
        u = jnp.clip(u, -particles.U_MAX, particles.U_MAX)  # a saturated sample (|a| > 0.999) is learnt as |a| = 0.999
        a_uniform = jax.random.uniform(key_uniform, u.shape, minval=-0.999, maxval=0.999)  # |arctanh| <= U_MAX

        def loss_fn(actor_params):
            q_term = jnp.mean(weights * denoising(actor_params, key_q, obs, u, temperature))
            entropy_term = jnp.mean(denoising(actor_params, key_entropy, obs, jnp.arctanh(a_uniform), temperature))
            return q_term + hyper.entropy_weight * entropy_term, None

        actor_params, opt_state, (loss, _), grads = base.gradient_step(
            loss_fn, state.actor_params, state.actor_opt_state, actor_opt.update)
        metrics = {"actor_loss": loss,
                   "q_weight_frac_zero": jnp.mean(weights == 0.0), "actor_grad_norm": optax.tree.norm(grads)}
        return actor_params, opt_state, metrics

    def update(state: particles.ParticleState, key: Array, batch: Transition):
        check_rank("qvpo.update", "batch.obs", batch.obs, 2, "[B, O]")
        batch_size = batch.obs.shape[0]
        key_sample, key_next, key_actor = jax.random.split(key, 3)
        temperature = particles.temperature_of(s.temperature_mode, state, state.hyper.temperature)
        fn = lambda key_i, obs_i: samples(state.actor_params, state.critic_params, key_i, obs_i,  # noqa: E731
                                          temperature, s.num_train_particles)
        u, q = jax.lax.stop_gradient(particles.map_states(fn, key_sample, jnp.concatenate([batch.obs, batch.next_obs]),
                                                     chunk))
        pick = jax.vmap(particles.select, (0, 0, None, None))(jax.random.split(key_next, batch_size), q[batch_size:],
                                                         temperature, False)
        u_next = jnp.take_along_axis(u[batch_size:], pick[:, None, None], axis=1)[:, 0]
        target_q_t = critics.apply(state.target_critic_params, batch.next_obs, jnp.tanh(u_next))
        critic_params, critic_opt_state, critic_metrics = critics.step(
            state.critic_params, state.critic_opt_state, batch, target_q_t, state.hyper.gamma)
        weights = jax.vmap(q_weights)(q[:batch_size])  # [B, P]
        actor_params, actor_opt_state, actor_metrics = actor_step(state, key_actor, batch.obs, u[:batch_size], weights,
                                                                  temperature)
        key_entropy = jax.random.fold_in(key, 1)  # mode entropy only; the other draws keep their keys
        log_temperature, temperature_metrics = particles.temperature_step(
            s.temperature_mode, state, temperature, q, key_entropy, actor, batch.obs, ode)
        new_state = state.replace(
            actor_params=actor_params, critic_params=critic_params,
            target_critic_params=base.polyak(critic_params, state.target_critic_params, state.hyper.tau),
            actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state, updates=state.updates + 1,
            log_temperature=log_temperature)
        return new_state, {**critic_metrics, **actor_metrics, **temperature_metrics, "temperature": temperature}

    return base.Agent(name="qvpo", init=init, act=act, update=update, hyper=QVPOHyper(), check_hyper=check_hyper)


SPEC = base.AgentSpec(name="qvpo", build=build, settings=QVPOSettings, hyper=QVPOHyper(),
                      check_hyper=check_hyper)
SPECS = (SPEC,)  # what the registry finds in this file
