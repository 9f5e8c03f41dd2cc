"""What the particle agents (RFM, QNE, DQS, QSM, QVPO) share: the state, its init, the policy
network's checks, particle sampling with Boltzmann selection and the automatic temperature.

Particle sampling: P latents per state through the policy's ODE (Euler on a velocity, or DDIM on
an epsilon / score network), then argmax_i Q(s, tanh u_i) (greedy) or a draw from
softmax_i(Q(s, tanh u_i) / lambda).

Temperature (``temperature_mode``, the agents with a Boltzmann lambda: RFM, QNE, DQS, QVPO):
``fixed`` uses hyper.temperature (RFM: and its schedule); ``ess`` and ``entropy`` keep log lambda
in the state and take one dual-ascent step after each update (``rfm_jax.method.temperature``):

    ess:      log lambda += lr (f* - mean_s f_s(lambda)),   f_s = ESS / P of softmax(q_s / lambda)
              over the update's P policy particles at its sampled states (f* = hyper.ess_target)
    entropy:  log lambda += lr (H* - H(lambda)) / |A|,       H* = -hyper.entropy_target_scale |A|

H = -mean_b log pi(a_b | s_b) over one policy sample per batch state, log pi by the sampler's
change of variables (``sample_log_prob``).  Both clip lambda to [temperature_min,
temperature_max]; a NaN lambda shows in the next update's ``temperature`` metric, which the
loop's non-finite guard stops on.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rfm_jax._speed import normal_rows
from rfm_jax.agents import base
from rfm_jax.method import density, estimators, schedules, temperature
from rfm_jax.method.validation import check_positive_int, check_rank
from rfm_jax.networks import BLOCKS

Array = jax.Array
# The latent bound of a clean-latent prediction: |tanh u| <= 0.999.  Clipping the DDIM's x1 prediction
# here is the latent form of the "clip denoised" to [-1, 1] that the reference diffusion agents use.
U_MAX = float(np.arctanh(0.999))
# p0 = N(0, I) of every estimator and loss the agents call, drawn as 16-wide rows (``rfm_jax._speed``).
SOURCE = estimators.standard_normal(normal_rows.normal)
CPU_CHUNK_ROWS = 4096  # policy-network rows per lax.map chunk of the sampler on CPU ("auto")
CPU_POSTERIOR_ROWS = 5120  # critic rows (states x particles) per lax.map chunk of the estimator on CPU ("auto")
TEMPERATURE_MODES = ("fixed", "ess", "entropy")


@struct.dataclass
class ParticleState:
    """The state of every particle agent (one seed)."""

    actor_params: dict
    critic_params: dict  # leaves have a leading critic axis K
    target_critic_params: dict
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState  # one Adam state per critic (leading axis K)
    hyper: Any
    updates: Array  # [] int32
    log_temperature: Array  # [] log lambda: the next update's (ess / entropy modes), the last one's (fixed)


def init_state(key: Array, hyper, *, actor, actor_opt, critics, obs_dim: int, action_dim: int) -> ParticleState:
    """A fresh state of any agent with a ``PolicyNet`` policy: actor initialised at zero inputs and
    lambda = 1, critics and their targets equal, float32 hyper, log lambda from hyper.temperature
    (0 for an agent without one, QSM)."""
    key_actor, key_critic = jax.random.split(key)
    actor_params = actor.init(key_actor, jnp.zeros((obs_dim,)), jnp.zeros((action_dim,)), jnp.zeros(()), jnp.ones(()))
    critic_params, critic_opt_state = critics.init(key_critic, obs_dim, action_dim)
    return ParticleState(actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
                         actor_opt_state=actor_opt.init(actor_params), critic_opt_state=critic_opt_state,
                         hyper=jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hyper),
                         updates=jnp.zeros((), jnp.int32),
                         log_temperature=jnp.log(jnp.asarray(getattr(hyper, "temperature", 1.0), jnp.float32)))


@struct.dataclass
class TemperatureHyper:
    """The automatic temperature's sweepable numbers (``temperature_mode`` ess or entropy); the
    hyper of every agent with a Boltzmann lambda extends it."""

    ess_target: Array | float = temperature.DEFAULT_ESS_TARGET  # ess: f* = ESS / P held (e^-1: lambda ~ std of Q)
    entropy_target_scale: Array | float = 1.0  # entropy: the policy's entropy is held at -scale * |A| (SAC's)
    temperature_lr: Array | float = 1e-3  # ess / entropy: step of log lambda per update, times the error
    temperature_min: Array | float = 1e-4  # ess / entropy: lower bound on lambda
    temperature_max: Array | float = 10.0  # ess / entropy: upper bound on lambda


TEMPERATURE_FIELDS = tuple(f.name for f in dataclasses.fields(TemperatureHyper))


@dataclasses.dataclass(frozen=True)
class TemperatureSettings:
    """The static choice of how lambda is set (module docstring)."""

    temperature_mode: str = "fixed"  # fixed: hyper.temperature (and its schedule) | ess | entropy: tuned online


def check_temperature_hyper(name: str, hyper: TemperatureHyper) -> None:
    """One-line ValueErrors naming the first bad ``TemperatureHyper`` field."""
    base.check_leaf(name, "ess_target", hyper.ess_target, lambda v: (v > 0) & (v <= 1), "in (0, 1]")
    base.check_leaf(name, "entropy_target_scale", hyper.entropy_target_scale, lambda v: v == v, "a number")
    base.check_leaf(name, "temperature_lr", hyper.temperature_lr, lambda v: v > 0, "> 0")
    base.check_leaf(name, "temperature_min", hyper.temperature_min, lambda v: v > 0, "> 0")
    base.check_leaf(name, "temperature_max", hyper.temperature_max,
                    lambda v: v > np.asarray(hyper.temperature_min, np.float64), "> temperature_min")


def temperature_of(mode: str, state: ParticleState, fixed: Array) -> Array:
    """lambda of this update or action: ``fixed`` (mode fixed) or exp(state.log_temperature)."""
    return fixed if mode == "fixed" else jnp.exp(state.log_temperature)


def temperature_step(mode: str, state: ParticleState, lam: Array, q: Array, key: Array, actor, obs: Array,
                     integrate_kwargs: dict) -> tuple[Array, dict]:
    """(log lambda of the next update, metrics) after an update at lambda ``lam`` whose sampled
    states had particle values q [S, P]; mode entropy also estimates the entropy of ``actor``
    (state.actor_params, the pre-update network) at the batch's states obs [B, O] with ``key``."""
    hyper = state.hyper
    bounds = (jnp.log(hyper.temperature_min), jnp.log(hyper.temperature_max))
    fraction = jnp.mean(jax.vmap(temperature.ess_fraction, (0, None))(q, lam))
    metrics = {"policy_ess_frac": fraction}
    if mode == "ess":
        new, _ = temperature.ess_temperature_step(state.log_temperature, q, hyper.ess_target, hyper.temperature_lr,
                                                  bounds)
    elif mode == "entropy":
        entropy = policy_entropy(key, actor, state.actor_params, lam, obs, **integrate_kwargs)
        new = temperature.entropy_temperature_step(state.log_temperature, entropy, -hyper.entropy_target_scale *
                                                   actor.action_dim, hyper.temperature_lr, bounds, actor.action_dim)
        metrics["policy_entropy"] = entropy
    else:
        new = jnp.log(lam)
    return new, metrics


def model_fn_at(actor, actor_params, temperature):
    """obs [O] -> the ``PolicyNet`` at that state and lambda, ``(x [A], t []) -> [A]`` (its state
    and lambda columns applied once, ``PolicyNet.condition``)."""
    def at(obs):
        cond = actor.apply(actor_params, obs, temperature, method=actor.condition)
        return lambda x, t: actor.apply(actor_params, cond, x, t, method=actor.from_condition)
    return at


def sample_log_prob(model_fn, x_start: Array, *, policy: str, schedule, num_steps: int, t_min: float,
                    x1_bound: float | None = None) -> tuple[Array, Array]:
    """(u [A], log pi(tanh u) []) of the sampler of ``integrate`` from x_start [A] ~ N(0, I):
    its exact change of variables (``density.sampler_log_prob``) and the tanh correction."""
    ts = schedules.time_grid(num_steps, t_min, 1 - t_min)
    if policy == "flow":
        step = lambda x, t, t_next: schedules.euler_step(model_fn, x, t, t_next)  # noqa: E731
    else:
        step = lambda x, t, t_next: schedules.ddim_step(model_fn, x, t, t_next, schedule=schedule,  # noqa: E731
                                                        x1_bound=x1_bound)
    u, log_p_u = density.sampler_log_prob(step, x_start, ts)
    return u, density.tanh_log_prob(u, log_p_u)


def policy_entropy(key: Array, actor, actor_params, temperature: Array, obs: Array, **integrate_kwargs) -> Array:
    """H = -mean_b log pi(a_b | s_b) of the ``PolicyNet`` ``actor`` at lambda ``temperature``, one
    sample per state obs [B, O] (``sample_log_prob``)."""
    at = model_fn_at(actor, actor_params, temperature)
    x_start = normal_rows.normal(key, (obs.shape[0], actor.action_dim))
    log_p = jax.vmap(lambda o, x: sample_log_prob(at(o), x, **integrate_kwargs)[1])(obs, x_start)
    return -jnp.mean(log_p)


@dataclasses.dataclass(frozen=True)
class PolicyNetSettings:
    """The static settings every particle agent shares (its policy network, sampler and critics);
    each agent's settings dataclass extends it and may change a default."""

    num_eval_particles: int = 32  # policy samples per state when evaluating (argmax-Q)
    num_ode_steps: int = 10  # sampler steps from t_min to 1 - t_min
    t_min: float = 0.01  # t is kept in [t_min, 1 - t_min]
    actor_width: int = 256  # width of the policy network
    actor_blocks: int = 2  # residual blocks in that network
    actor_block: str = "reference"  # reference: h + GELU(Dense h); prenorm: h + Dense GELU Dense LayerNorm h
    actor_embed_dim: int = 128  # sinusoidal embedding size of t and of lambda (each)
    critic_hidden: tuple[int, ...] = (256, 256)  # hidden sizes of each critic MLP
    num_critics: int = 2  # critics in the ensemble (the TD target and the actor's Q use their min)
    actor_lr: float = 3e-4  # Adam learning rate of the policy network
    critic_lr: float = 1e-3  # Adam learning rate of the critics
    grad_clip: float | str | None = 10.0  # global-norm clip of the actor's and each critic's gradient; none: no clip


def check_policy_net(name: str, s: PolicyNetSettings, obs_dim: int, action_dim: int) -> None:
    """One-line ValueErrors naming the first bad ``PolicyNetSettings`` field or dimension (the
    critics' fields are checked by ``base.make_critics``)."""
    for arg, value in (("obs_dim", obs_dim), ("action_dim", action_dim), ("num_eval_particles", s.num_eval_particles),
                       ("num_ode_steps", s.num_ode_steps), ("actor_width", s.actor_width),
                       ("actor_blocks", s.actor_blocks)):
        check_positive_int(name, arg, value)
    base.check_choice(name, "actor_block", s.actor_block, BLOCKS)
    if s.actor_embed_dim % 2 or s.actor_embed_dim < 4:
        raise ValueError(f"{name}: `actor_embed_dim` must be even and >= 4, got {s.actor_embed_dim}.")
    if not 0.0 < s.t_min < 0.5:
        raise ValueError(f"{name}: `t_min` must lie in (0, 0.5), got {s.t_min}.")
    base.check_positive(name, actor_lr=s.actor_lr)
    if isinstance(s, TemperatureSettings):
        base.check_choice(name, "temperature_mode", s.temperature_mode, TEMPERATURE_MODES)


def select(key: Array, q: Array, temperature, greedy: bool) -> Array:
    """Index into P particles: argmax q (greedy) or a draw from softmax(q / temperature).  q: [P]."""
    check_rank("select", "q", q, 1, "[P]")
    return jnp.argmax(q) if greedy else jax.random.categorical(key, q / temperature)


def integrate(model_fn, x_start: Array, *, policy: str, schedule, num_steps: int, t_min: float,
              x1_bound: float | None = None) -> Array:
    """Latents [P, A] from noise x_start [P, A]: Euler on a velocity (``policy="flow"``) or DDIM on
    an epsilon network (``"diffusion"``, its x1 prediction clipped to ``x1_bound`` when given) from
    t_min to 1 - t_min.  ``model_fn(x [P, A], t []) -> [P, A]``."""
    kwargs = dict(num_steps=num_steps, t_start=t_min, t_end=1 - t_min)
    if policy == "flow":
        return schedules.sample_euler(model_fn, x_start, **kwargs)
    return schedules.sample_ddim(model_fn, x_start, schedule=schedule, x1_bound=x1_bound, **kwargs)


class SampleNoise(NamedTuple):
    """The draws of ``sample_select`` at one state, given instead of a key: the ODE's starts
    x_start [P, A] and Gumbel noise [P] of the Boltzmann choice (unused when greedy)."""

    x_start: Array
    gumbel: Array


def sample_select(key: Array, model_fn, q_fn, *, num_particles: int, action_dim: int, temperature, greedy: bool,
                  noise: SampleNoise | None = None, **integrate_kwargs) -> tuple[Array, Array]:
    """(u [A], q [P]): one latent at one state, from ``num_particles`` latents by ``integrate`` and
    ``select`` on their values q = ``q_fn(tanh u [P, A]) -> [P]``.  With ``noise`` the draws are
    given (the key is unused) and the Boltzmann choice is argmax(q / lambda + gumbel), the same
    rule as ``jax.random.categorical``."""
    if noise is None:
        key_start, key_select = jax.random.split(key)
        x_start = normal_rows.normal(key_start, (num_particles, action_dim))
    else:
        x_start = noise.x_start
    latents = integrate(model_fn, x_start, **integrate_kwargs)
    q = q_fn(jnp.tanh(latents))
    if noise is None:
        index = select(key_select, q, temperature, greedy)
    else:
        index = jnp.argmax(q if greedy else q / temperature + noise.gumbel)
    return latents[index], q


def map_states(fn, key: Array, obs: Array, chunk: int | None, noise=None) -> Array:
    """``fn(key_i, obs_i)`` over states obs [N, O] with one key each, or ``fn(key_i, obs_i,
    noise_i)`` when a pytree ``noise`` of leading axis N is given: one vmap (chunk None) or
    ``lax.map`` in chunks of ``chunk`` states (same numbers, less memory)."""
    keys = jax.random.split(key, obs.shape[0])
    args = (keys, obs) if noise is None else (keys, obs, noise)
    if chunk is None:
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args, batch_size=chunk)


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
