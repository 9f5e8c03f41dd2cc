"""What every agent shares: the one interface, its description for the registry and the configs,
the factory that checks settings, the hyperparameter checks, one gradient step, the critic
ensemble and Polyak averaging.  Pure functions; state goes in and comes out.

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

An agent file defines a frozen settings dataclass (static: shapes, counts, modes, learning rates;
each field with its default and a one-line comment), a hyper dataclass (sweepable leaves, the
same) and one ``AgentSpec`` per registered name (``SPECS``).  Those dataclasses are the only place
a default is written: ``make`` builds the agent from them, and the configs are generated from them.
A preset of another agent (QNE and DQS of RFM) is a spec with ``fixed`` settings and its own
``defaults``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rfm_jax.method import losses
from rfm_jax.method.validation import check_positive_int, check_rank
from rfm_jax.networks import CriticEnsemble

# Settings renamed in 0.2.0: the old name still works, with a warning, until the next release.
RENAMED = {"num_data_particles": "num_act_particles"}


class Agent(NamedTuple):
    """The one interface of every agent (module docstring).  ``hyper`` holds the defaults of the
    agent's hyperparameter pytree, ``settings`` the static settings it was built with and ``name``
    its registry name."""

    name: str
    init: Any
    act: Any
    update: Any
    hyper: Any
    check_hyper: Any
    settings: Any = None


class AgentSpec(NamedTuple):
    """One registered agent: ``build(settings, *, obs_dim, action_dim, name) -> Agent`` (``name``
    is the factory's name for its errors) from an instance of the ``settings`` dataclass;
    ``hyper`` the default hyper pytree and ``check_hyper(hyper, name)`` its checks.  A preset of
    another agent fixes some settings (``fixed``: absent from its config, refused by its factory,
    ``fixed_why`` says why in that error), changes others' defaults (``defaults``) and may show
    only some hyper fields in its config (``hyper_fields``)."""

    name: str
    build: Callable
    settings: type
    hyper: Any
    check_hyper: Callable
    fixed: dict = {}
    fixed_why: str = ""
    defaults: dict = {}
    hyper_fields: tuple | None = None
    base_factory: str = ""  # the factory that can change the fixed settings

    def default_settings(self) -> dict:
        """{field: default} of the settings a user may set (the fixed ones left out)."""
        fields = {f.name: f.default for f in dataclasses.fields(self.settings)}
        return {k: self.defaults.get(k, v) for k, v in fields.items() if k not in self.fixed}

    def default_hyper(self) -> dict:
        """{field: default} of the hyper fields the config shows."""
        leaves = hyper_leaves(self.hyper)
        return {k: v for k, v in leaves.items() if self.hyper_fields is None or k in self.hyper_fields}


def make(spec: AgentSpec, *, obs_dim: int, action_dim: int, **settings) -> Agent:
    """The agent of ``spec`` with ``settings`` over its defaults: an unknown or fixed setting is a
    one-line ValueError naming it, a renamed one (``RENAMED``) a DeprecationWarning."""
    name = f"make_{spec.name}"
    for old, new in RENAMED.items():
        if old in settings:
            if new in settings:
                raise ValueError(f"{name}: `{old}` is the old name of `{new}`; give only `{new}`.")
            warnings.warn(f"{name}: `{old}` is renamed `{new}` (0.2.0); the old name goes in the next release.",
                          DeprecationWarning, stacklevel=3)
            settings[new] = settings.pop(old)
    known = spec.default_settings()
    for arg in settings:
        if arg in spec.fixed:
            raise ValueError(f"{name}: `{arg}` is fixed by {spec.name.upper()} ({spec.fixed_why}); use "
                             f"{spec.base_factory} to change it.")
        if arg not in known:
            raise ValueError(f"{name}: unknown setting `{arg}`; settings: {', '.join(known)}.")
    resolved = spec.settings(**{**known, **settings, **spec.fixed})
    agent = spec.build(resolved, obs_dim=obs_dim, action_dim=action_dim, name=name)
    def check_hyper(hyper) -> None:
        spec.check_hyper(hyper, spec.name)
        check_schedule(spec.name, resolved, hyper)

    return agent._replace(name=spec.name, hyper=spec.hyper, settings=resolved, check_hyper=check_hyper)


def check_schedule(name: str, settings, hyper) -> None:
    """A one-line ValueError when a temperature schedule (``hyper.temperature_final``) meets an
    automatic ``temperature_mode``, which tunes lambda itself."""
    mode = getattr(settings, "temperature_mode", "fixed")
    if mode != "fixed" and getattr(hyper, "temperature_final", None) is not None:
        raise ValueError(f"{name}: `hyper.temperature_final` (a schedule) applies to temperature_mode='fixed' only; "
                         f"temperature_mode={mode!r} tunes lambda from hyper.temperature.")


def gradient_step(loss_fn: Callable, params, opt_state, opt_update: Callable):
    """One optimiser step on ``loss_fn(params) -> (loss, aux)``: returns (params, opt_state,
    (loss, aux), grads).  ``opt_update(grads, opt_state) -> (updates, opt_state)`` (an optax
    transformation's ``update``, or its vmap over an ensemble axis)."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt_update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, (loss, aux), grads


def polyak(online, target, tau):
    """Qbar <- (1 - tau) Qbar + tau Q, leaf by leaf."""
    return optax.incremental_update(online, target, tau)


def check_choice(name: str, arg: str, value, allowed) -> None:
    """One-line ValueError naming the argument when ``value`` is not in ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}: `{arg}` must be one of {tuple(allowed)}, got {value!r}.")


def check_positive(name: str, **values) -> None:
    """One-line ValueError naming the first argument that is not a finite number > 0."""
    for arg, value in values.items():
        if not (value > 0 and np.isfinite(value)):
            raise ValueError(f"{name}: `{arg}` must be finite and > 0, got {value}.")


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

        params, opt_state, (_, (loss_k, q_tm1, target)), grads = gradient_step(
            loss_fn, params, opt_state, jax.vmap(opt.update))
        metrics = {"critic_loss": jnp.mean(loss_k), "q_mean": jnp.mean(q_tm1),
                   "q_std": jnp.std(jnp.min(q_tm1, axis=-1)), "td_target_mean": jnp.mean(target),
                   "critic_grad_norm": jnp.mean(jax.vmap(optax.tree.norm)(grads))}
        return params, opt_state, metrics

    return Critics(init=init, apply=module.apply, step=step)
