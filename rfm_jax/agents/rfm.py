"""The RFM agent (docs/method.md section 7): a flow or diffusion policy in the latent u of
a = tanh(u), trained by Reverse Flow Matching against twin critics.  Pure ``init`` / ``act`` /
``update``; every function acts on one seed (vmap it over seeds and sweeps).

One update on a batch of B transitions (UTD 1 at the reference defaults), lambda = lambda(n) after
n updates (log-linear from ``temperature`` to ``temperature_final`` over ``temperature_steps``):

1. Sample P_train latent particles per state with the ODE (Euler on v_theta for the flow, DDIM on
   eps_theta for the diffusion) from t_min to 1 - t_min at s and s' in one pass, and keep one per
   state drawn from softmax_i(min_k Q_k(s, tanh u_i) / lambda) with the critics BEFORE this update:
   u1 at s (the on-policy proposal; the replay proposal uses arctanh of the buffer action instead)
   and u' at s'.
2. Critics: y = r + gamma * discount * min_k Qbar_k(s', tanh u'); each critic k has its own loss
   mean_b (Q_k(s, a) - y)^2, its own gradient-norm clip and its own Adam state.
3. Actor: t ~ U[t_min, 1 - t_min], u_t = alpha_t u1 + beta_t eps; the target comes from
   ``posterior_mean`` on log p1(u) = min_k Q_k(s, tanh u) / lambda + sum_j log(1 - tanh^2 u_j)
   with the critics AFTER step 2 (grad_u through the argmin critic only, ``min_critic.q_min``);
   loss = mean_b ||net(s, u_t, t, lambda) - target||^2 / A.
4. Polyak: Qbar <- (1 - tau) Qbar + tau Q.

Acting: P_act particles and Boltzmann resampling (training data), or argmax-Q over P_eval
particles (``greedy=True``, evaluation).  The network's state-and-lambda input columns are applied
once per state and its time columns once per ODE step (``PolicyNet.condition``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rfm_jax.agents import base, particles
from rfm_jax.method import losses, schedules
from rfm_jax.method.estimators import tanh_boltzmann_log_prob
from rfm_jax.method.transition import Transition
from rfm_jax.method.validation import check_positive_int, check_rank
from rfm_jax.networks import PolicyNet, min_critic

Array = jax.Array
POLICIES = ("flow", "diffusion")
PROPOSALS = ("on_policy", "replay")
CONTROL_VARIATES = ("optimal", "optimal_isotropic", "safe_isotropic", "crossfit_isotropic", "none", "fixed")
DIFFUSION_SCHEDULES = ("cosine", "vp", "ve")


@struct.dataclass
class RFMHyper(particles.TemperatureHyper):
    """Sweepable numbers (pytree leaves: vmap them to train several values at once); the automatic
    temperature's are ``particles.TemperatureHyper``'s."""

    temperature: Array | float = 0.02  # lambda of the target exp(Q / lambda) at update 0 (ess, entropy: their start)
    temperature_final: Array | float | None = None  # lambda after temperature_steps updates; None: constant
    temperature_steps: Array | float = 250_000  # updates over which log lambda moves linearly
    gamma: Array | float = 0.99  # TD discount
    tau: Array | float = 0.005  # Polyak rate of the target critics
    ridge: Array | float = 1e-4  # ridge in the optimal coefficient
    clip: Array | float = 2.0  # bound on |coefficient| (optimal modes); inf for none
    eta: Array | float = 0.0  # the fixed coefficient when control_variate == "fixed"


@dataclasses.dataclass(frozen=True)
class RFMSettings(particles.TemperatureSettings, particles.PolicyNetSettings):
    """Static settings (shapes, counts, modes, learning rates): changing one recompiles.  The
    policy network's, sampler's and critics' fields are ``particles.PolicyNetSettings``'s, the
    temperature mode ``particles.TemperatureSettings``'s."""

    policy: str = "flow"  # flow (linear path, velocity, Euler) or diffusion (VP/VE path, epsilon, DDIM)
    diffusion_schedule: str = "cosine"  # diffusion path: cosine (VP), vp (linear beta 0.1-20), ve (sigma 1 to 1e-5)
    proposal: str = "on_policy"  # endpoints: on_policy (Boltzmann-resampled samples) or replay (buffer actions)
    temperature_mode: str = "ess"  # fixed | ess | entropy (particles.TemperatureSettings); ess: docs/results.md's study
    control_variate: str = "safe_isotropic"  # safe_isotropic | optimal (paper) | *_isotropic | none (eta=0) | fixed
    coef_space: str = "data"  # where the optimal coefficient is fitted and clipped: data (reference) or noise
    num_posterior_particles: int = 100  # particles of the posterior-mean estimator
    num_train_particles: int = 32  # policy samples per state in the update (on-policy proposal and a')
    num_act_particles: int = 32  # policy samples per state when acting in training (Boltzmann-resampled)
    x1_bound: float | None = None  # diffusion: clip of the DDIM's clean latent to [-x1_bound, x1_bound]; None: none
    particle_batch: int | None = None  # posterior particles per lax.map chunk; 0: one vmap; None: auto
    sample_chunk: int | None = None  # sampler states per lax.map chunk; 0: one vmap; None: auto


class UpdateNoise(NamedTuple):
    """Every draw of one ``update``, given instead of its key (fixed-noise and golden tests).  S is
    the number of sampled states: 2B for the on-policy proposal (the batch's s, then its s'), B for
    the replay proposal (s' only).

    x_start [S, P_train, A] and gumbel [S, P_train]: the sampler's starts and its Boltzmann noise.
    t [B], x0 [B, A], particles [B, N, A]: the actor regression's draws (``losses.RegressionNoise``).
    """

    x_start: Array
    gumbel: Array
    t: Array
    x0: Array
    particles: Array


def current_temperature(hyper: RFMHyper, updates: Array) -> Array:
    """lambda(n) = exp(log l0 + (log l1 - log l0) min(n / N, 1)) after n updates."""
    frac = jnp.clip(updates / jnp.maximum(hyper.temperature_steps, 1.0), 0.0, 1.0)
    log_l0, log_l1 = jnp.log(hyper.temperature), jnp.log(hyper.temperature_final)
    return jnp.exp(log_l0 + (log_l1 - log_l0) * frac)


def check_hyper(hyper: RFMHyper, name: str = "rfm") -> None:
    """A one-line ValueError naming the first out-of-range field (every value of a swept leaf)."""
    base.check_leaf(name, "temperature", hyper.temperature, lambda v: v > 0, "> 0")
    if hyper.temperature_final is not None:
        base.check_leaf(name, "temperature_final", hyper.temperature_final, lambda v: v > 0, "> 0 (or None: constant)")
    base.check_leaf(name, "temperature_steps", hyper.temperature_steps, lambda v: v > 0, "> 0")
    base.check_common_hyper(name, hyper)
    base.check_leaf(name, "ridge", hyper.ridge, lambda v: v >= 0, ">= 0")
    base.check_leaf(name, "clip", hyper.clip, lambda v: v > 0, "> 0 (inf: no clip)", allow_inf=True)
    base.check_leaf(name, "eta", hyper.eta, lambda v: v == v, "a number")
    particles.check_temperature_hyper(name, hyper)


RFMState = particles.ParticleState  # the old name (0.2.0), removed in the next release


def make_rfm(*, obs_dim: int, action_dim: int, **settings) -> base.Agent:
    """The RFM agent's pure functions; ``settings`` override ``RFMSettings``'s defaults (all static).

    policy: "flow" (linear path, velocity net, Euler) or "diffusion" (epsilon net, DDIM).
    diffusion_schedule: the diffusion policy's path, "cosine" (VP, as QNE), "vp" (VP, linear beta) or
      "ve" (sigma from 1 to 1e-5, as DQS).
    proposal: "on_policy" (Boltzmann-resampled policy samples) or "replay" (arctanh of buffer actions).
    control_variate: "optimal" (diagonal), "optimal_isotropic", "safe_isotropic" (the isotropic one
      guarded at low ESS, ``rfm_jax.method.safe_cv``), "crossfit_isotropic", "none" (eta = 0, QNE)
      or "fixed" (eta = hyper.eta in noise space; eta = 1 is DQS).  coef_space: "data" (reference)
      or "noise".
    num_train_particles / num_act_particles / num_eval_particles: policy particles per state for
      the update's proposal and a' / for acting during training / for greedy evaluation.
    x1_bound: diffusion policy only: the DDIM sampler clips its clean-latent prediction to
      [-x1_bound, x1_bound] (``particles.U_MAX`` = atanh(0.999) is the latent image of the reference
      codes' action clip to [-1, 1]); None for no clip.
    particle_batch / sample_chunk: posterior particles / sampler states per ``lax.map`` chunk, 0 for
      one vmap, None for auto (``resolve_particle_batch``, ``resolve_sample_chunk``: cache-sized
      chunks on CPU, one vmap on a GPU).  Same numbers.
    """
    return base.make(SPEC, obs_dim=obs_dim, action_dim=action_dim, **settings)


def _check_settings(s: RFMSettings, name: str, obs_dim: int, action_dim: int) -> None:
    """One-line ValueErrors naming the first bad setting."""
    particles.check_policy_net(name, s, obs_dim, action_dim)
    for arg in ("num_posterior_particles", "num_train_particles", "num_act_particles"):
        check_positive_int(name, arg, getattr(s, arg))
    for arg, allowed in (("policy", POLICIES), ("proposal", PROPOSALS), ("diffusion_schedule", DIFFUSION_SCHEDULES),
                         ("control_variate", CONTROL_VARIATES), ("coef_space", ("data", "noise"))):
        base.check_choice(name, arg, getattr(s, arg), allowed)
    if s.control_variate not in ("none", "fixed") and s.num_posterior_particles < 2:
        raise ValueError(f"{name}: the fitted control variates need `num_posterior_particles` >= 2.")
    for arg in ("sample_chunk", "particle_batch"):
        if getattr(s, arg) not in (None, "auto"):
            check_positive_int(name, arg, getattr(s, arg), minimum=0)
    if s.x1_bound is not None:
        if s.policy != "diffusion":
            raise ValueError(f"{name}: `x1_bound` applies to the diffusion policy only (policy={s.policy!r}).")
        base.check_positive(name, x1_bound=s.x1_bound)


def build(s: RFMSettings, *, obs_dim: int, action_dim: int, name: str = "make_rfm") -> base.Agent:
    """The agent of settings ``s`` (module docstring); ``name`` names the factory in errors."""
    _check_settings(s, name, obs_dim, action_dim)
    critics = base.make_critics(num_critics=s.num_critics, hidden=s.critic_hidden, lr=s.critic_lr,
                                     grad_clip=s.grad_clip, name=name)
    if s.policy == "flow":
        schedule = schedules.linear()
    else:
        schedule = {"cosine": schedules.cosine, "vp": schedules.vp, "ve": schedules.ve}[s.diffusion_schedule]()
    actor = PolicyNet(obs_dim, action_dim, s.actor_width, s.actor_blocks, s.actor_embed_dim, s.actor_block)
    actor_opt = optax.chain(base.gradient_clip(name, s.grad_clip), optax.adam(s.actor_lr))
    chunk = particles.resolve_sample_chunk(s.sample_chunk, s.num_train_particles)
    ode = dict(policy=s.policy, schedule=schedule, num_steps=s.num_ode_steps, t_min=s.t_min, x1_bound=s.x1_bound)

    def init(key: Array, hyper: RFMHyper) -> particles.ParticleState:
        base.check_schedule(name, s, hyper)
        if hyper.temperature_final is None:
            hyper = hyper.replace(temperature_final=hyper.temperature)
        return particles.init_state(key, hyper, actor=actor, actor_opt=actor_opt, critics=critics, obs_dim=obs_dim,
                          action_dim=action_dim)

    def q_min(critic_params, obs, action):
        return jnp.min(critics.apply(critic_params, obs, action), axis=-1)

    def sample_select(actor_params, critic_params, key, obs, temperature, num_particles, greedy, noise=None):
        """(u [A], q [P]) at one state obs [O]: P particles through the ODE, then argmax-Q (greedy)
        or a draw from softmax(Q / lambda) (``particles.sample_select``; ``noise``: its draws)."""
        model_fn = particles.model_fn_at(actor, actor_params, temperature)(obs)
        return particles.sample_select(key, model_fn, lambda a: q_min(critic_params, obs, a),
                                       num_particles=num_particles, action_dim=action_dim, temperature=temperature,
                                       greedy=greedy, noise=noise, **ode)

    def act(state: particles.ParticleState, key: Array, obs: Array, greedy: bool = False) -> Array:
        check_rank("rfm.act", "obs", obs, 1, "[O]")
        temperature = particles.temperature_of(s.temperature_mode, state, current_temperature(state.hyper,
                                                                                               state.updates))
        num_particles = s.num_eval_particles if greedy else s.num_act_particles
        u, _ = sample_select(state.actor_params, state.critic_params, key, obs, temperature, num_particles, greedy)
        return jnp.tanh(u)

    def actor_step(state, critic_params, key, batch, u1, temperature, noise=None):
        """RFM regression of the policy network onto the posterior-mean targets."""
        hyper = state.hyper
        mode = hyper.eta if s.control_variate == "fixed" else s.control_variate
        loss_fn = losses.rfm_velocity_loss if s.policy == "flow" else losses.rfm_noise_loss
        posterior_chunk = particles.resolve_particle_batch(s.particle_batch, s.num_posterior_particles,
                                                           batch.obs.shape[0])

        def loss_one(actor_params, key_i, obs, u1_i, noise_i=None):
            log_prob = tanh_boltzmann_log_prob(lambda a: min_critic.q_min(critic_params, obs, a), temperature)
            model_fn = lambda x, t: actor.apply(actor_params, obs, x, t, temperature)  # noqa: E731
            return loss_fn(key_i, model_fn, log_prob, u1_i, schedule=schedule, t_min=s.t_min,
                           num_particles=s.num_posterior_particles, control_variate=mode, ridge=hyper.ridge,
                           clip=hyper.clip, coef_space=s.coef_space, particle_batch=posterior_chunk, noise=noise_i,
                           source=particles.SOURCE)

        def batch_loss(actor_params):
            keys = jax.random.split(key, batch.obs.shape[0])
            if noise is None:
                loss, aux = jax.vmap(loss_one, (None, 0, 0, 0))(actor_params, keys, batch.obs, u1)
            else:
                regression = losses.RegressionNoise(noise.t, noise.x0, noise.particles)
                loss, aux = jax.vmap(loss_one, (None, 0, 0, 0, 0))(actor_params, keys, batch.obs, u1, regression)
            return jnp.mean(loss), aux

        actor_params, opt_state, (loss, aux), grads = base.gradient_step(
            batch_loss, state.actor_params, state.actor_opt_state, actor_opt.update)
        ess = aux.estimate.ess
        metrics = {"actor_loss": loss, "ess_mean": jnp.mean(ess), "ess_frac_below_2": jnp.mean(ess < 2.0),
                   "coef_abs_mean": jnp.mean(jnp.abs(aux.estimate.coef)),
                   "target_norm": jnp.mean(jnp.linalg.norm(aux.target, axis=-1)),
                   "actor_grad_norm": optax.tree.norm(grads)}
        return actor_params, opt_state, metrics

    def update(state: particles.ParticleState, key: Array, batch: Transition, noise: UpdateNoise | None = None):
        """One update (module docstring); ``noise`` gives its draws instead of ``key``."""
        check_rank("rfm.update", "batch.obs", batch.obs, 2, "[B, O]")
        batch_size = batch.obs.shape[0]
        key_sample, key_actor = jax.random.split(key)
        temperature = particles.temperature_of(s.temperature_mode, state, current_temperature(state.hyper,
                                                                                               state.updates))
        # One sampler pass for s (on-policy endpoints) and s' (a'), selected with the pre-update critics.
        sample_obs = jnp.concatenate([batch.obs, batch.next_obs]) if s.proposal == "on_policy" else batch.next_obs
        fn = lambda key_i, obs_i, noise_i=None: sample_select(  # noqa: E731
            state.actor_params, state.critic_params, key_i, obs_i, temperature, s.num_train_particles, False, noise_i)
        if noise is not None and noise.x_start.shape[0] != sample_obs.shape[0]:
            raise ValueError(f"rfm.update: `noise.x_start` needs {sample_obs.shape[0]} rows (the states sampled "
                             f"with proposal={s.proposal!r}), got {noise.x_start.shape[0]}.")
        sample_noise = None if noise is None else particles.SampleNoise(noise.x_start, noise.gumbel)
        latents, q = jax.lax.stop_gradient(particles.map_states(fn, key_sample, sample_obs, chunk, sample_noise))
        u_next = latents[-batch_size:]
        if s.proposal == "on_policy":
            u1 = latents[:batch_size]
        else:
            u1 = jnp.arctanh(jnp.clip(batch.action, -1 + 1e-6, 1 - 1e-6))
        target_q_t = critics.apply(state.target_critic_params, batch.next_obs, jnp.tanh(u_next))
        critic_params, critic_opt_state, critic_metrics = critics.step(
            state.critic_params, state.critic_opt_state, batch, target_q_t, state.hyper.gamma)
        actor_params, actor_opt_state, actor_metrics = actor_step(state, critic_params, key_actor, batch, u1,
                                                                  temperature, noise)
        key_entropy = jax.random.fold_in(key, 1)  # mode entropy only; the other draws keep their keys
        log_temperature, temperature_metrics = particles.temperature_step(
            s.temperature_mode, state, temperature, q, key_entropy, actor, batch.obs, ode)
        new_state = state.replace(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=base.polyak(critic_params, state.target_critic_params, state.hyper.tau),
            actor_opt_state=actor_opt_state,
            critic_opt_state=critic_opt_state,
            updates=state.updates + 1,
            log_temperature=log_temperature,
        )
        return new_state, {**critic_metrics, **actor_metrics, **temperature_metrics, "temperature": temperature}

    return base.Agent(name="rfm", init=init, act=act, update=update, hyper=RFMHyper(), check_hyper=check_hyper)


SPEC = base.AgentSpec(name="rfm", build=build, settings=RFMSettings, hyper=RFMHyper(), check_hyper=check_hyper)
SPECS = (SPEC,)  # what the registry finds in this file
