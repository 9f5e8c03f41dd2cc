"""The agent core every agent shares: the one interface, the critic ensemble, Polyak averaging and
particle sampling with Boltzmann selection.  Pure functions; state goes in and comes out.

Interface (``Agent``), for one seed (vmap it over seeds and sweeps):

    init(key, hyper) -> state          hyper: the agent's hyperparameter pytree (sweepable leaves)
    act(state, key, obs [O], greedy) -> a [A] in [-1, 1]      greedy is static
    update(state, key, batch Transition[B]) -> (state, metrics {name: []})
    check_hyper(hyper) -> None: a one-line ValueError naming the first bad field (leaves may be
        arrays: a sweep checks every value)

Critic ensemble (K critics, per-critic loss, clip and Adam; docs/method.md sections 7 and 8):

    y_b     = r_b + gamma d_b (min_k Qbar_k(s'_b, a'_b) - alpha log pi(a'_b | s'_b))   (alpha = 0: hard backup)
    L_k     = mean_b (Q_k(s_b, a_b) - y_b)^2,   each critic clipped and stepped on its own
    Qbar_k <- (1 - tau) Qbar_k + tau Q_k

Particle sampling: P latents per state through the policy's ODE (Euler on a velocity, or DDIM on
an epsilon / score network), then argmax_i Q(s, tanh u_i) (greedy) or a draw from
softmax_i(Q(s, tanh u_i) / lambda).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rfm_jax._speed import normal_rows
from rfm_jax.method import estimators, losses, schedules
from rfm_jax.method.validation import check_positive_int, check_rank
from rfm_jax.networks import BLOCKS, CriticEnsemble

Array = jax.Array
# The latent bound of a clean-latent prediction: |tanh u| <= 0.999.  Clipping the DDIM's x1 prediction
# here is the latent form of the "clip denoised" to [-1, 1] that the reference diffusion agents use.
U_MAX = float(np.arctanh(0.999))
# p0 = N(0, I) of every estimator and loss the agents call, drawn as 16-wide rows (``rfm_jax._speed``).
SOURCE = estimators.standard_normal(normal_rows.normal)


class Agent(NamedTuple):
    """The one interface of every agent (module docstring).  ``hyper`` holds the defaults of the
    agent's hyperparameter pytree; ``name`` is its registry name."""

    name: str
    init: Any
    act: Any
    update: Any
    hyper: Any
    check_hyper: Any


def check_choice(name: str, arg: str, value, allowed) -> None:
    """One-line ValueError naming the argument when ``value`` is not in ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}: `{arg}` must be one of {tuple(allowed)}, got {value!r}.")


def check_positive(name: str, **values) -> None:
    """One-line ValueError naming the first argument that is not a finite number > 0."""
    for arg, value in values.items():
        if not (value > 0 and np.isfinite(value)):
            raise ValueError(f"{name}: `{arg}` must be finite and > 0, got {value}.")


def check_policy_net(name: str, *, actor_block: str, actor_embed_dim: int, t_min: float, actor_lr: float) -> None:
    """The checks every flow / diffusion policy network shares (``PolicyNet`` and its sampler)."""
    check_choice(name, "actor_block", actor_block, BLOCKS)
    if actor_embed_dim % 2 or actor_embed_dim < 4:
        raise ValueError(f"{name}: `actor_embed_dim` must be even and >= 4, got {actor_embed_dim}.")
    if not 0.0 < t_min < 0.5:
        raise ValueError(f"{name}: `t_min` must lie in (0, 0.5), got {t_min}.")
    check_positive(name, actor_lr=actor_lr)


def gradient_clip(name: str, grad_clip) -> optax.GradientTransformation:
    """The global-norm clip of one gradient: ``grad_clip`` a number > 0, or None / "none" / inf for
    no clip (an identity transformation).  Anything else is a one-line ValueError naming it."""
    if grad_clip is None or (isinstance(grad_clip, str) and grad_clip.strip().lower() == "none"):
        return optax.identity()
    try:
        value = float(grad_clip)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(grad_clip, bool) or not value > 0:
        raise ValueError(f"{name}: `grad_clip` must be a number > 0, or none (no clip), got {grad_clip!r}.")
    return optax.identity() if value == float("inf") else optax.clip_by_global_norm(value)


def check_leaf(name: str, field: str, value, ok, rule: str, allow_inf: bool = False) -> None:
    """One-line ValueError naming ``hyper.<field>`` unless ``ok`` holds for every entry of
    ``value`` (a swept leaf is an array) and every entry is finite (NaN never passes; +-inf only
    with ``allow_inf``)."""
    v = np.asarray(value, np.float64)
    finite = ~np.isnan(v) if allow_inf else np.isfinite(v)
    if not np.all(finite & ok(v)):
        rule = rule if allow_inf else f"finite and {rule}"
        raise ValueError(f"{name}: `hyper.{field}` must be {rule}, got {value}.")


def check_common_hyper(name: str, hyper) -> None:
    """The fields every agent has: gamma in [0, 1], tau in (0, 1]."""
    check_leaf(name, "gamma", hyper.gamma, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
    check_leaf(name, "tau", hyper.tau, lambda v: (v > 0) & (v <= 1), "in (0, 1]")


def hyper_leaves(hyper) -> dict:
    """The sweepable fields of a hyperparameter dataclass: {name: value}."""
    return {f: getattr(hyper, f) for f in hyper.__dataclass_fields__}


class Critics(NamedTuple):
    """K critics: ``init(key, obs_dim, action_dim) -> (params, opt_state)``, ``apply(params, obs
    [..., O], action [..., A]) -> [..., K]``, ``step(params, opt_state, batch, target_q_t [B, K],
    gamma, log_prob_t [B], alpha) -> (params, opt_state, metrics)``."""

    init: Any
    apply: Any
    step: Any


def make_critics(*, num_critics: int, hidden, lr: float, grad_clip, name: str = "make_critics") -> Critics:
    """The critic ensemble (module docstring); checks its own arguments."""
    check_positive_int(name, "num_critics", num_critics)
    if not all(isinstance(w, int) and w > 0 for w in hidden):
        raise ValueError(f"{name}: `critic_hidden` must be positive integers, got {hidden!r}.")
    check_positive(name, critic_lr=lr)
    module = CriticEnsemble(num_critics, tuple(hidden))
    opt = optax.chain(gradient_clip(name, grad_clip), optax.adam(lr))  # vmapped: one clip and Adam per critic

    def init(key, obs_dim, action_dim):
        params = module.init(key, jnp.zeros((obs_dim,)), jnp.zeros((action_dim,)))
        return params, jax.vmap(opt.init)(params)

    def step(params, opt_state, batch, target_q_t, gamma, log_prob_t=None, alpha=0.0):
        check_rank("Critics.step", "target_q_t", target_q_t, 2, "[B, K]")
        log_prob_t = jnp.zeros_like(batch.reward) if log_prob_t is None else log_prob_t

        def loss_fn(critic_params):
            q_tm1 = module.apply(critic_params, batch.obs, batch.action)
            td = lambda q, r, d, tq, lp: losses.critic_td_loss(q, r, d, tq, gamma=gamma, log_prob_t=lp,  # noqa: E731
                                                               temperature=alpha)
            _, aux = jax.vmap(td)(q_tm1, batch.reward, batch.discount, target_q_t, log_prob_t)
            loss_k = jnp.mean(aux.td_error**2, axis=0)  # [K]; critic k's loss depends on its params only
            return jnp.sum(loss_k), (loss_k, q_tm1, aux.target)

        grads, (loss_k, q_tm1, target) = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = jax.vmap(opt.update)(grads, opt_state)
        metrics = {"critic_loss": jnp.mean(loss_k), "q_mean": jnp.mean(q_tm1),
                   "q_std": jnp.std(jnp.min(q_tm1, axis=-1)), "td_target_mean": jnp.mean(target),
                   "critic_grad_norm": jnp.mean(jax.vmap(optax.tree.norm)(grads))}
        return optax.apply_updates(params, updates), opt_state, metrics

    return Critics(init=init, apply=module.apply, step=step)


def polyak(online, target, tau):
    """Qbar <- (1 - tau) Qbar + tau Q, leaf by leaf."""
    return optax.incremental_update(online, target, tau)


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
                  noise: SampleNoise | None = None, **integrate_kwargs) -> Array:
    """One latent u [A] at one state: ``num_particles`` latents by ``integrate``, then ``select``
    on ``q_fn(tanh u [P, A]) -> [P]``.  With ``noise`` the draws are given (the key is unused) and
    the Boltzmann choice is argmax(q / lambda + gumbel), the same rule as ``jax.random.categorical``."""
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
    return latents[index]


def map_states(fn, key: Array, obs: Array, chunk: int | None, noise=None) -> Array:
    """``fn(key_i, obs_i)`` over states obs [N, O] with one key each, or ``fn(key_i, obs_i,
    noise_i)`` when a pytree ``noise`` of leading axis N is given: one vmap (chunk None) or
    ``lax.map`` in chunks of ``chunk`` states (same numbers, less memory)."""
    keys = jax.random.split(key, obs.shape[0])
    args = (keys, obs) if noise is None else (keys, obs, noise)
    if chunk is None:
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args, batch_size=chunk)
