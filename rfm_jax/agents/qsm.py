"""QSM (Q-score matching; docs/method.md section 8): a VP diffusion policy whose epsilon network is
regressed onto the critics' action gradient at the noisy action, so that the policy's score follows
grad_a Q; Gaussian exploration noise on the training actions.  Pure ``init`` / ``act`` /
``update`` on one seed, with RFM's state, network and critic core.

One update on a batch of B transitions:

1. a' = tanh(u') with u' one DDIM sample of the policy at s' (each step's prediction of the clean
   latent clipped to |u| <= arctanh(0.999), as diffusion-policy samplers clip the denoised action).
2. Critics: y = r + gamma * discount * min_k Qbar_k(s', a'); per-critic loss, clip and Adam.
3. Actor, with the updated critics, on the replay action's latent u = arctanh(a) (QSM trains on
   buffer actions): t ~ U[t_min, 1 - t_min], u_t = alpha_t u + beta_t eps, and

       loss = mean_b || eps_theta(s_b, u_t, t) + c grad_u min_k Q_k(s_b, tanh u_t) ||^2 / A

   (``losses.qsm_loss``; c = ``hyper.score_scale``, 50 in the paper).
4. Polyak: Qbar <- (1 - tau) Qbar + tau Q.

Acting: one policy sample plus N(0, noise^2) exploration noise, clipped to [-1, 1] (training
data), or argmax-Q over P_eval samples (``greedy=True``, evaluation, as for every particle agent).

Departures from the QSM paper: the policy lives in the tanh latent (the gradient is taken there,
grad_u Q = (1 - tanh^2 u) grad_a Q), the sampler is DDIM (the paper: DDPM), and the network gets a
constant 1 in place of RFM's temperature input.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rfm_jax._speed import normal_rows
from rfm_jax.agents import base, particles
from rfm_jax.method import losses, schedules
from rfm_jax.method.transition import Transition
from rfm_jax.method.validation import check_rank
from rfm_jax.networks import PolicyNet

Array = jax.Array


@struct.dataclass
class QSMHyper:
    """Sweepable numbers (pytree leaves)."""

    score_scale: Array | float = 50.0  # c: the epsilon target is -c grad_u Q at the noisy latent
    exploration_noise: Array | float = 0.1  # std of the Gaussian noise added to training actions
    gamma: Array | float = 0.99  # TD discount
    tau: Array | float = 0.005  # Polyak rate of the target critics


def check_hyper(hyper: QSMHyper, name: str = "qsm") -> None:
    """A one-line ValueError naming the first out-of-range field."""
    base.check_leaf(name, "score_scale", hyper.score_scale, lambda v: v > 0, "> 0")
    base.check_leaf(name, "exploration_noise", hyper.exploration_noise, lambda v: v >= 0, ">= 0")
    base.check_common_hyper(name, hyper)


@dataclasses.dataclass(frozen=True)
class QSMSettings(particles.PolicyNetSettings):
    """Static settings: ``particles.PolicyNetSettings`` with QSM's number of sampler steps."""

    num_ode_steps: int = 20  # DDIM steps from t_min to 1 - t_min on the VP path (QSM: 20)


def make_qsm(*, obs_dim: int, action_dim: int, **settings) -> base.Agent:
    """QSM's pure functions; ``settings`` override ``QSMSettings``'s defaults (all static)."""
    return base.make(SPEC, obs_dim=obs_dim, action_dim=action_dim, **settings)


def build(s: QSMSettings, *, obs_dim: int, action_dim: int, name: str = "make_qsm") -> base.Agent:
    """The agent of settings ``s``; ``name`` names the factory in errors."""
    particles.check_policy_net(name, s, obs_dim, action_dim)

    critics = base.make_critics(num_critics=s.num_critics, hidden=s.critic_hidden, lr=s.critic_lr,
                                grad_clip=s.grad_clip, name=name)
    schedule = schedules.vp()
    actor = PolicyNet(obs_dim, action_dim, s.actor_width, s.actor_blocks, s.actor_embed_dim, s.actor_block)
    actor_opt = optax.chain(base.gradient_clip(name, s.grad_clip), optax.adam(s.actor_lr))
    ode = dict(policy="diffusion", schedule=schedule, num_steps=s.num_ode_steps, t_min=s.t_min,
               x1_bound=particles.U_MAX)
    one = jnp.ones(())  # the network's temperature input, unused by QSM

    def init(key: Array, hyper: QSMHyper) -> particles.ParticleState:
        return particles.init_state(key, hyper, actor=actor, actor_opt=actor_opt, critics=critics, obs_dim=obs_dim,
                          action_dim=action_dim)

    def q_min(critic_params, obs, action):
        return jnp.min(critics.apply(critic_params, obs, action), axis=-1)

    def sample(actor_params, key, obs, num_particles):
        """P latents [P, A] at one state obs [O] by clipped DDIM."""
        cond = actor.apply(actor_params, obs, one, method=actor.condition)
        model_fn = lambda x, t: actor.apply(actor_params, cond, x, t, method=actor.from_condition)  # noqa: E731
        return particles.integrate(model_fn, normal_rows.normal(key, (num_particles, action_dim)), **ode)

    def act(state: particles.ParticleState, key: Array, obs: Array, greedy: bool = False) -> Array:
        check_rank("qsm.act", "obs", obs, 1, "[O]")
        key_sample, key_noise = jax.random.split(key)
        if greedy:
            u = sample(state.actor_params, key_sample, obs, s.num_eval_particles)
            return jnp.tanh(u[jnp.argmax(q_min(state.critic_params, obs, jnp.tanh(u)))])
        a = jnp.tanh(sample(state.actor_params, key_sample, obs, 1)[0])
        noise = state.hyper.exploration_noise * normal_rows.normal(key_noise, a.shape)
        return jnp.clip(a + noise, -1.0, 1.0)

    def actor_step(state, critic_params, key, batch):
        """QSM regression of the epsilon network onto -c grad_u Q at noisy replay latents."""
        u1 = jnp.arctanh(jnp.clip(batch.action, -0.999, 0.999))

        def loss_one(actor_params, key_i, obs, u1_i):
            noise_fn = lambda x, t: actor.apply(actor_params, obs, x, t, one)  # noqa: E731
            q_fn = lambda u: q_min(critic_params, obs, jnp.tanh(u))  # noqa: E731
            return losses.qsm_loss(key_i, noise_fn, q_fn, u1_i, schedule=schedule, scale=state.hyper.score_scale,
                                   t_min=s.t_min, source=particles.SOURCE)

        def batch_loss(actor_params):
            keys = jax.random.split(key, batch.obs.shape[0])
            loss, (_, _, target) = jax.vmap(loss_one, (None, 0, 0, 0))(actor_params, keys, batch.obs, u1)
            return jnp.mean(loss), target

        actor_params, opt_state, (loss, target), grads = base.gradient_step(
            batch_loss, state.actor_params, state.actor_opt_state, actor_opt.update)
        metrics = {"actor_loss": loss, "target_norm": jnp.mean(jnp.linalg.norm(target, axis=-1)),
                   "actor_grad_norm": optax.tree.norm(grads)}
        return actor_params, opt_state, metrics

    def update(state: particles.ParticleState, key: Array, batch: Transition):
        check_rank("qsm.update", "batch.obs", batch.obs, 2, "[B, O]")
        key_next, key_actor = jax.random.split(key)
        keys = jax.random.split(key_next, batch.obs.shape[0])
        u_next = jax.vmap(lambda k, o: sample(state.actor_params, k, o, 1)[0])(keys, batch.next_obs)
        target_q_t = critics.apply(state.target_critic_params, batch.next_obs, jnp.tanh(u_next))
        critic_params, critic_opt_state, critic_metrics = critics.step(
            state.critic_params, state.critic_opt_state, batch, target_q_t, state.hyper.gamma)
        actor_params, actor_opt_state, actor_metrics = actor_step(state, critic_params, key_actor, batch)
        new_state = state.replace(
            actor_params=actor_params, critic_params=critic_params,
            target_critic_params=base.polyak(critic_params, state.target_critic_params, state.hyper.tau),
            actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state, updates=state.updates + 1)
        return new_state, {**critic_metrics, **actor_metrics}

    return base.Agent(name="qsm", init=init, act=act, update=update, hyper=QSMHyper(), check_hyper=check_hyper)


SPEC = base.AgentSpec(name="qsm", build=build, settings=QSMSettings, hyper=QSMHyper(),
                      check_hyper=check_hyper)
SPECS = (SPEC,)  # what the registry finds in this file
