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

Acting: P_data particles and Boltzmann resampling (training data), or argmax-Q over P_eval
particles (``greedy=True``, evaluation).  The network's state-and-lambda input columns are applied
once per state and its time columns once per ODE step (``PolicyNet.condition``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rfm_jax._speed import min_critic
from rfm_jax.agents import base
from rfm_jax.method import losses, schedules
from rfm_jax.method.estimators import tanh_boltzmann_log_prob
from rfm_jax.method.validation import check_positive_int, check_rank
from rfm_jax.networks import PolicyNet
from rfm_jax.training import replay

Array = jax.Array
POLICIES = ("flow", "diffusion")
PROPOSALS = ("on_policy", "replay")
CONTROL_VARIATES = ("optimal", "optimal_isotropic", "none", "fixed")
DIFFUSION_SCHEDULES = ("cosine", "vp", "ve")
CPU_CHUNK_ROWS = 4096  # policy-network rows per lax.map chunk of the sampler on CPU ("auto")
CPU_POSTERIOR_ROWS = 5120  # critic rows (states x particles) per lax.map chunk of the estimator on CPU ("auto")


@struct.dataclass
class RFMHyper:
    """Sweepable numbers (pytree leaves: vmap them to train several values at once)."""

    temperature: Array | float = 0.02  # lambda of the Boltzmann target exp(Q / lambda) at update 0
    temperature_final: Array | float | None = None  # lambda after temperature_steps updates; None: constant
    temperature_steps: Array | float = 250_000  # updates over which log lambda moves linearly
    gamma: Array | float = 0.99  # TD discount
    tau: Array | float = 0.005  # Polyak rate of the target critics
    ridge: Array | float = 1e-4  # ridge in the optimal coefficient
    clip: Array | float = 2.0  # bound on |coefficient| (optimal modes); inf for none
    eta: Array | float = 0.0  # the fixed coefficient when control_variate == "fixed"


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


def check_hyper(hyper: RFMHyper) -> None:
    """A one-line ValueError naming the first out-of-range field (every value of a swept leaf)."""
    name = "rfm"
    base.check_leaf(name, "temperature", hyper.temperature, lambda v: v > 0, "> 0")
    if hyper.temperature_final is not None:
        base.check_leaf(name, "temperature_final", hyper.temperature_final, lambda v: v > 0, "> 0 (or None: constant)")
    base.check_leaf(name, "temperature_steps", hyper.temperature_steps, lambda v: v > 0, "> 0")
    base.check_common_hyper(name, hyper)
    base.check_leaf(name, "ridge", hyper.ridge, lambda v: v >= 0, ">= 0")
    base.check_leaf(name, "clip", hyper.clip, lambda v: v > 0, "> 0 (inf: no clip)", allow_inf=True)
    base.check_leaf(name, "eta", hyper.eta, lambda v: v == v, "a number")


@struct.dataclass
class RFMState:
    actor_params: dict
    critic_params: dict  # leaves have a leading critic axis K
    target_critic_params: dict
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState  # one Adam state per critic (leading axis K)
    hyper: RFMHyper
    updates: Array  # [] int32


def init_state(key: Array, hyper, *, actor, actor_opt, critics, obs_dim: int, action_dim: int) -> RFMState:
    """A fresh state of any agent with a ``PolicyNet`` policy (RFM, QNE, DQS, QVPO, QSM): actor
    initialised at zero inputs and lambda = 1, critics and their targets equal, float32 hyper."""
    key_actor, key_critic = jax.random.split(key)
    actor_params = actor.init(key_actor, jnp.zeros((obs_dim,)), jnp.zeros((action_dim,)), jnp.zeros(()), jnp.ones(()))
    critic_params, critic_opt_state = critics.init(key_critic, obs_dim, action_dim)
    return RFMState(actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
                    actor_opt_state=actor_opt.init(actor_params), critic_opt_state=critic_opt_state,
                    hyper=jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hyper), updates=jnp.zeros((), jnp.int32))


def resolve_sample_chunk(sample_chunk, num_particles: int) -> int | None:
    """States per sampler chunk, or None for one vmap: ``sample_chunk`` None (or "auto") is
    ``CPU_CHUNK_ROWS // num_particles`` on CPU and one vmap on an accelerator, where the sampler is
    latency-bound; 0 is one vmap; a positive int is itself."""
    if sample_chunk not in (None, "auto"):
        return sample_chunk or None
    if jax.default_backend() != "cpu":
        return None
    return max(1, CPU_CHUNK_ROWS // num_particles)


def resolve_particle_batch(particle_batch, num_particles: int, batch_size: int) -> int | None:
    """Posterior particles per chunk, or None for one vmap: ``particle_batch`` None (or "auto") is
    the largest divisor of ``num_particles`` with at most ``CPU_POSTERIOR_ROWS`` rows over the
    batch on CPU (100 particles, batch 256: 20) and one vmap on an accelerator; 0 is one vmap; a
    positive int is itself."""
    if particle_batch not in (None, "auto"):
        return particle_batch or None
    if jax.default_backend() != "cpu":
        return None
    limit = max(1, CPU_POSTERIOR_ROWS // batch_size)
    return max(d for d in range(1, min(limit, num_particles) + 1) if num_particles % d == 0)


def make_rfm(
    *,
    obs_dim: int,
    action_dim: int,
    policy: str = "flow",
    diffusion_schedule: str = "cosine",
    proposal: str = "on_policy",
    control_variate: str = "optimal",
    coef_space: str = "data",
    num_posterior_particles: int = 100,
    num_train_particles: int = 32,
    num_data_particles: int = 32,
    num_eval_particles: int = 32,
    num_ode_steps: int = 10,
    t_min: float = 0.01,
    actor_width: int = 256,
    actor_blocks: int = 2,
    actor_block: str = "reference",
    actor_embed_dim: int = 128,
    critic_hidden: tuple[int, ...] = (256, 256),
    num_critics: int = 2,
    actor_lr: float = 3e-4,
    critic_lr: float = 1e-3,
    grad_clip: float | str | None = 10.0,
    x1_bound: float | None = None,
    particle_batch: int | None = None,
    sample_chunk: int | None = None,
) -> base.Agent:
    """Build the agent's pure functions; every argument is static (shapes, counts, modes).

    policy: "flow" (linear path, velocity net, Euler) or "diffusion" (epsilon net, DDIM).
    diffusion_schedule: the diffusion policy's path, "cosine" (VP, as QNE), "vp" (VP, linear beta) or
      "ve" (sigma from 1 to 1e-5, as DQS).
    proposal: "on_policy" (Boltzmann-resampled policy samples) or "replay" (arctanh of buffer actions).
    control_variate: "optimal" (diagonal), "optimal_isotropic", "none" (eta = 0, QNE) or "fixed"
      (eta = hyper.eta in noise space; eta = 1 is DQS).  coef_space: "data" (reference) or "noise".
    num_train_particles / num_data_particles / num_eval_particles: policy particles per state for
      the update's proposal and a' / for acting during training / for greedy evaluation.
    actor_block: "reference" (h + GELU(Dense h)) or "prenorm" (h + Dense GELU Dense LayerNorm h).
    grad_clip: global-norm bound of each critic's and the actor's gradient; inf for none.
    x1_bound: diffusion policy only: the DDIM sampler clips its clean-latent prediction to
      [-x1_bound, x1_bound] (``base.U_MAX`` = atanh(0.999) is the latent image of the reference
      codes' action clip to [-1, 1]); None for no clip.
    particle_batch: posterior particles per ``lax.map`` chunk, 0 for one vmap, None for auto
      (``resolve_particle_batch``: about 5k critic rows per chunk on CPU, one vmap on a GPU).
    sample_chunk: states per ``lax.map`` chunk of the update's sampler, 0 for one vmap, None for
      auto (``resolve_sample_chunk``: cache-sized chunks on CPU, one vmap on a GPU).  Same numbers.
    """
    name = "make_rfm"
    for arg, value in (("obs_dim", obs_dim), ("action_dim", action_dim), ("num_posterior_particles",
                       num_posterior_particles), ("num_train_particles", num_train_particles),
                       ("num_data_particles", num_data_particles), ("num_eval_particles", num_eval_particles),
                       ("num_ode_steps", num_ode_steps), ("actor_width", actor_width),
                       ("actor_blocks", actor_blocks), ("actor_embed_dim", actor_embed_dim)):
        check_positive_int(name, arg, value)
    for arg, value, allowed in (("policy", policy, POLICIES), ("proposal", proposal, PROPOSALS),
                                ("diffusion_schedule", diffusion_schedule, DIFFUSION_SCHEDULES),
                                ("control_variate", control_variate, CONTROL_VARIATES),
                                ("coef_space", coef_space, ("data", "noise"))):
        if value not in allowed:
            raise ValueError(f"{name}: `{arg}` must be one of {allowed}, got {value!r}.")
    if control_variate.startswith("optimal") and num_posterior_particles < 2:
        raise ValueError(f"{name}: the optimal control variates need `num_posterior_particles` >= 2.")
    for arg, value in (("sample_chunk", sample_chunk), ("particle_batch", particle_batch)):
        if value not in (None, "auto"):
            check_positive_int(name, arg, value, minimum=0)
    if x1_bound is not None:
        if policy != "diffusion":
            raise ValueError(f"{name}: `x1_bound` applies to the diffusion policy only (policy={policy!r}).")
        base.check_positive(name, x1_bound=x1_bound)
    base.check_policy_net(name, actor_block=actor_block, actor_embed_dim=actor_embed_dim, t_min=t_min,
                          actor_lr=actor_lr)

    critics = base.make_critics(num_critics=num_critics, hidden=critic_hidden, lr=critic_lr, grad_clip=grad_clip,
                                name=name)
    if policy == "flow":
        schedule = schedules.linear()
    else:
        schedule = {"cosine": schedules.cosine, "vp": schedules.vp, "ve": schedules.ve}[diffusion_schedule]()
    actor = PolicyNet(obs_dim, action_dim, actor_width, actor_blocks, actor_embed_dim, actor_block)
    actor_opt = optax.chain(base.gradient_clip(name, grad_clip), optax.adam(actor_lr))
    chunk = resolve_sample_chunk(sample_chunk, num_train_particles)
    ode = dict(policy=policy, schedule=schedule, num_steps=num_ode_steps, t_min=t_min, x1_bound=x1_bound)

    def init(key: Array, hyper: RFMHyper) -> RFMState:
        if hyper.temperature_final is None:
            hyper = hyper.replace(temperature_final=hyper.temperature)
        return init_state(key, hyper, actor=actor, actor_opt=actor_opt, critics=critics, obs_dim=obs_dim,
                          action_dim=action_dim)

    def q_min(critic_params, obs, action):
        return jnp.min(critics.apply(critic_params, obs, action), axis=-1)

    def sample_select(actor_params, critic_params, key, obs, temperature, num_particles, greedy, noise=None):
        """One latent u [A] at one state obs [O]: P particles through the ODE, then argmax-Q
        (greedy) or a draw from softmax(Q / lambda) (``base.sample_select``; ``noise``: its draws)."""
        cond = actor.apply(actor_params, obs, temperature, method=actor.condition)
        model_fn = lambda x, t: actor.apply(actor_params, cond, x, t, method=actor.from_condition)  # noqa: E731
        return base.sample_select(key, model_fn, lambda a: q_min(critic_params, obs, a), num_particles=num_particles,
                                  action_dim=action_dim, temperature=temperature, greedy=greedy, noise=noise, **ode)

    def act(state: RFMState, key: Array, obs: Array, greedy: bool = False) -> Array:
        check_rank("rfm.act", "obs", obs, 1, "[O]")
        temperature = current_temperature(state.hyper, state.updates)
        particles = num_eval_particles if greedy else num_data_particles
        u = sample_select(state.actor_params, state.critic_params, key, obs, temperature, particles, greedy)
        return jnp.tanh(u)

    def actor_step(state, critic_params, key, batch, u1, temperature, noise=None):
        """RFM regression of the policy network onto the posterior-mean targets."""
        hyper = state.hyper
        mode = hyper.eta if control_variate == "fixed" else control_variate
        loss_fn = losses.rfm_velocity_loss if policy == "flow" else losses.rfm_noise_loss
        posterior_chunk = resolve_particle_batch(particle_batch, num_posterior_particles, batch.obs.shape[0])

        def loss_one(actor_params, key_i, obs, u1_i, noise_i=None):
            log_prob = tanh_boltzmann_log_prob(lambda a: min_critic.q_min(critic_params, obs, a), temperature)
            model_fn = lambda x, t: actor.apply(actor_params, obs, x, t, temperature)  # noqa: E731
            return loss_fn(key_i, model_fn, log_prob, u1_i, schedule=schedule, t_min=t_min,
                           num_particles=num_posterior_particles, control_variate=mode, ridge=hyper.ridge,
                           clip=hyper.clip, coef_space=coef_space, particle_batch=posterior_chunk, noise=noise_i,
                           source=base.SOURCE)

        def batch_loss(actor_params):
            keys = jax.random.split(key, batch.obs.shape[0])
            if noise is None:
                loss, aux = jax.vmap(loss_one, (None, 0, 0, 0))(actor_params, keys, batch.obs, u1)
            else:
                regression = losses.RegressionNoise(noise.t, noise.x0, noise.particles)
                loss, aux = jax.vmap(loss_one, (None, 0, 0, 0, 0))(actor_params, keys, batch.obs, u1, regression)
            return jnp.mean(loss), aux

        (loss, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.actor_params)
        updates, opt_state = actor_opt.update(grads, state.actor_opt_state)
        ess = aux.estimate.ess
        metrics = {"actor_loss": loss, "ess_mean": jnp.mean(ess), "ess_frac_below_2": jnp.mean(ess < 2.0),
                   "coef_abs_mean": jnp.mean(jnp.abs(aux.estimate.coef)),
                   "target_norm": jnp.mean(jnp.linalg.norm(aux.target, axis=-1)),
                   "actor_grad_norm": optax.tree.norm(grads)}
        return optax.apply_updates(state.actor_params, updates), opt_state, metrics

    def update(state: RFMState, key: Array, batch: replay.Transition, noise: UpdateNoise | None = None):
        """One update (module docstring); ``noise`` gives its draws instead of ``key``."""
        check_rank("rfm.update", "batch.obs", batch.obs, 2, "[B, O]")
        batch_size = batch.obs.shape[0]
        key_sample, key_actor = jax.random.split(key)
        temperature = current_temperature(state.hyper, state.updates)
        # One sampler pass for s (on-policy endpoints) and s' (a'), selected with the pre-update critics.
        sample_obs = jnp.concatenate([batch.obs, batch.next_obs]) if proposal == "on_policy" else batch.next_obs
        fn = lambda key_i, obs_i, noise_i=None: sample_select(  # noqa: E731
            state.actor_params, state.critic_params, key_i, obs_i, temperature, num_train_particles, False, noise_i)
        if noise is not None and noise.x_start.shape[0] != sample_obs.shape[0]:
            raise ValueError(f"rfm.update: `noise.x_start` needs {sample_obs.shape[0]} rows (the states sampled "
                             f"with proposal={proposal!r}), got {noise.x_start.shape[0]}.")
        sample_noise = None if noise is None else base.SampleNoise(noise.x_start, noise.gumbel)
        latents = jax.lax.stop_gradient(base.map_states(fn, key_sample, sample_obs, chunk, sample_noise))
        u_next = latents[-batch_size:]
        if proposal == "on_policy":
            u1 = latents[:batch_size]
        else:
            u1 = jnp.arctanh(jnp.clip(batch.action, -1 + 1e-6, 1 - 1e-6))
        target_q_t = critics.apply(state.target_critic_params, batch.next_obs, jnp.tanh(u_next))
        critic_params, critic_opt_state, critic_metrics = critics.step(
            state.critic_params, state.critic_opt_state, batch, target_q_t, state.hyper.gamma)
        actor_params, actor_opt_state, actor_metrics = actor_step(state, critic_params, key_actor, batch, u1,
                                                                  temperature, noise)
        new_state = state.replace(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=base.polyak(critic_params, state.target_critic_params, state.hyper.tau),
            actor_opt_state=actor_opt_state,
            critic_opt_state=critic_opt_state,
            updates=state.updates + 1,
        )
        return new_state, {**critic_metrics, **actor_metrics, "temperature": temperature}

    return base.Agent(name="rfm", init=init, act=act, update=update, hyper=RFMHyper(), check_hyper=check_hyper)
