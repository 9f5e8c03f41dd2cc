"""Soft actor-critic (docs/method.md section 8): a tanh-Gaussian policy, K critics with the soft
TD backup, and the entropy temperature alpha tuned towards a target entropy of -A * scale.

One update on a batch of B transitions:

1. a' ~ pi(. | s'), y = r + gamma d (min_k Qbar_k(s', a') - alpha log pi(a' | s')); each critic has
   its own loss, clip and Adam (``base.make_critics``).
2. Actor, with the updated critics: mean_b alpha log pi(a_b | s_b) - min_k Q_k(s_b, a_b),
   a_b = tanh(mu + sigma eps) reparameterised.
3. alpha = exp(log_alpha): loss mean_b -log_alpha (log pi(a_b | s_b) + target_entropy).
4. Polyak averaging of the target critics.

Acting: a sample (training) or tanh(mu) (``greedy=True``, evaluation).  Pure init / act / update on
one seed; vmap over seeds and sweeps.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rfm_jax.agents import base
from rfm_jax.method import losses
from rfm_jax.method.transition import Transition
from rfm_jax.method.validation import check_positive_int, check_rank
from rfm_jax.networks import TanhGaussianActor, tanh_gaussian_sample

Array = jax.Array


@struct.dataclass
class SACHyper:
    """Sweepable numbers (pytree leaves)."""

    init_alpha: Array | float = 1.0  # initial entropy temperature alpha
    target_entropy_scale: Array | float = 1.0  # target entropy = -scale * action_dim
    gamma: Array | float = 0.99  # TD discount
    tau: Array | float = 0.005  # Polyak rate of the target critics


def check_hyper(hyper: SACHyper, name: str = "sac") -> None:
    """A one-line ValueError naming the first out-of-range field (every value of a swept leaf)."""
    base.check_leaf(name, "init_alpha", hyper.init_alpha, lambda v: v > 0, "> 0")
    base.check_leaf(name, "target_entropy_scale", hyper.target_entropy_scale, lambda v: v >= 0, ">= 0")
    base.check_common_hyper(name, hyper)


@struct.dataclass
class SACState:
    actor_params: dict
    critic_params: dict  # leaves have a leading critic axis K
    target_critic_params: dict
    log_alpha: Array  # []
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState  # one Adam state per critic
    alpha_opt_state: optax.OptState
    hyper: SACHyper
    updates: Array  # [] int32


@dataclasses.dataclass(frozen=True)
class SACSettings:
    """Static settings (sizes, learning rates): changing one recompiles."""

    actor_hidden: tuple[int, ...] = (256, 256)  # hidden sizes of the tanh-Gaussian policy MLP
    critic_hidden: tuple[int, ...] = (256, 256)  # hidden sizes of each critic MLP
    num_critics: int = 2  # critics in the ensemble (the TD target and the actor use their min)
    actor_lr: float = 3e-4  # Adam learning rate of the policy
    critic_lr: float = 3e-4  # Adam learning rate of the critics
    alpha_lr: float = 3e-4  # Adam learning rate of log alpha
    grad_clip: float | str | None = 10.0  # global-norm clip of the actor's and each critic's gradient; none: no clip


def make_sac(*, obs_dim: int, action_dim: int, **settings) -> base.Agent:
    """Build SAC's pure functions; ``settings`` override
    ``SACSettings``'s defaults (all static).  ``grad_clip`` bounds the actor's and
    each critic's gradient norm."""
    return base.make(SPEC, obs_dim=obs_dim, action_dim=action_dim, **settings)


def build(s: SACSettings, *, obs_dim: int, action_dim: int, name: str = "make_sac") -> base.Agent:
    """The agent of settings ``s``; ``name`` names the factory in errors."""
    check_positive_int(name, "obs_dim", obs_dim)
    check_positive_int(name, "action_dim", action_dim)
    if not all(isinstance(w, int) and w > 0 for w in s.actor_hidden):
        raise ValueError(f"{name}: `actor_hidden` must be positive integers, got {s.actor_hidden!r}.")
    base.check_positive(name, actor_lr=s.actor_lr, alpha_lr=s.alpha_lr)
    critics = base.make_critics(num_critics=s.num_critics, hidden=s.critic_hidden, lr=s.critic_lr,
                                grad_clip=s.grad_clip, name=name)
    actor = TanhGaussianActor(action_dim, tuple(s.actor_hidden))
    actor_opt = optax.chain(base.gradient_clip(name, s.grad_clip), optax.adam(s.actor_lr))
    alpha_opt = optax.adam(s.alpha_lr)

    def init(key: Array, hyper: SACHyper) -> SACState:
        key_actor, key_critic = jax.random.split(key)
        actor_params = actor.init(key_actor, jnp.zeros((obs_dim,)))
        critic_params, critic_opt_state = critics.init(key_critic, obs_dim, action_dim)
        hyper = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hyper)
        log_alpha = jnp.log(hyper.init_alpha)
        return SACState(actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
                        log_alpha=log_alpha, actor_opt_state=actor_opt.init(actor_params),
                        critic_opt_state=critic_opt_state, alpha_opt_state=alpha_opt.init(log_alpha), hyper=hyper,
                        updates=jnp.zeros((), jnp.int32))

    def policy(actor_params, key, obs):
        """(a [..., A], log pi(a) [...]) sampled at obs [..., O]."""
        mean, log_std = actor.apply(actor_params, obs)
        return tanh_gaussian_sample(key, mean, log_std)

    def act(state: SACState, key: Array, obs: Array, greedy: bool = False) -> Array:
        check_rank("sac.act", "obs", obs, 1, "[O]")
        if greedy:
            return jnp.tanh(actor.apply(state.actor_params, obs)[0])
        return policy(state.actor_params, key, obs)[0]

    def actor_step(state, critic_params, key, batch):
        alpha = jnp.exp(state.log_alpha)

        def loss_fn(actor_params):
            action, log_prob = policy(actor_params, key, batch.obs)
            q = critics.apply(critic_params, batch.obs, action)
            loss = jax.vmap(lambda q_b, lp_b: losses.sac_actor_loss(q_b, lp_b, temperature=alpha))(q, log_prob)
            return jnp.mean(loss), log_prob

        actor_params, opt_state, (loss, log_prob), grads = base.gradient_step(
            loss_fn, state.actor_params, state.actor_opt_state, actor_opt.update)
        metrics = {"actor_loss": loss, "entropy": -jnp.mean(log_prob), "actor_grad_norm": optax.tree.norm(grads)}
        return actor_params, opt_state, log_prob, metrics

    def alpha_step(state, log_prob):
        target_entropy = -state.hyper.target_entropy_scale * action_dim
        grad = jax.grad(lambda la: jnp.mean(jax.vmap(
            lambda lp: losses.sac_temperature_loss(la, lp, target_entropy=target_entropy))(log_prob)))(state.log_alpha)
        updates, opt_state = alpha_opt.update(grad, state.alpha_opt_state)
        return optax.apply_updates(state.log_alpha, updates), opt_state

    def update(state: SACState, key: Array, batch: Transition):
        check_rank("sac.update", "batch.obs", batch.obs, 2, "[B, O]")
        key_next, key_actor = jax.random.split(key)
        next_action, next_log_prob = policy(state.actor_params, key_next, batch.next_obs)
        target_q_t = critics.apply(state.target_critic_params, batch.next_obs, next_action)
        critic_params, critic_opt_state, critic_metrics = critics.step(
            state.critic_params, state.critic_opt_state, batch, target_q_t, state.hyper.gamma,
            next_log_prob, jnp.exp(state.log_alpha))
        actor_params, actor_opt_state, log_prob, actor_metrics = actor_step(state, critic_params, key_actor, batch)
        log_alpha, alpha_opt_state = alpha_step(state, log_prob)
        new_state = state.replace(
            actor_params=actor_params, critic_params=critic_params,
            target_critic_params=base.polyak(critic_params, state.target_critic_params, state.hyper.tau),
            log_alpha=log_alpha, actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state,
            alpha_opt_state=alpha_opt_state, updates=state.updates + 1)
        return new_state, {**critic_metrics, **actor_metrics, "alpha": jnp.exp(state.log_alpha)}

    return base.Agent(name="sac", init=init, act=act, update=update, hyper=SACHyper(), check_hyper=check_hyper)


SPEC = base.AgentSpec(name="sac", build=build, settings=SACSettings, hyper=SACHyper(),
                      check_hyper=check_hyper)
SPECS = (SPEC,)  # what the registry finds in this file
