"""A toy agent for tests/agents/test_extending.py: random shooting on twin critics (QT-Opt without the
cross-entropy refinement).  It acts by argmax-Q over ``num_candidates`` uniform actions (with
Gaussian exploration noise when not greedy) and backs up y = r + gamma d min_k Qbar_k(s', a*(s')).
The test copies this file to rfm_jax/agents/toy.py: nothing else in the package changes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from rfm_jax.agents import base
from rfm_jax.method.validation import check_positive_int


@dataclasses.dataclass(frozen=True)
class ToySettings:
    """Static settings."""

    num_candidates: int = 64  # uniform actions scored by the critics per state
    critic_hidden: tuple[int, ...] = (256, 256)  # hidden sizes of each critic MLP
    num_critics: int = 2  # critics in the ensemble
    critic_lr: float = 1e-3  # Adam learning rate of the critics
    grad_clip: float | str | None = 10.0  # global-norm clip of each critic's gradient; none: no clip


@struct.dataclass
class ToyHyper:
    """Sweepable numbers."""

    exploration_noise: jax.Array | float = 0.1  # std of the Gaussian noise on training actions
    gamma: jax.Array | float = 0.99  # TD discount
    tau: jax.Array | float = 0.005  # Polyak rate of the target critics


@struct.dataclass
class ToyState:
    critic_params: dict
    target_critic_params: dict
    critic_opt_state: object
    hyper: ToyHyper
    updates: jax.Array


def check_hyper(hyper: ToyHyper, name: str = "toy") -> None:
    base.check_leaf(name, "exploration_noise", hyper.exploration_noise, lambda v: v >= 0, ">= 0")
    base.check_common_hyper(name, hyper)


def build(s: ToySettings, *, obs_dim: int, action_dim: int, name: str = "make_toy") -> base.Agent:
    check_positive_int(name, "num_candidates", s.num_candidates)
    critics = base.make_critics(num_critics=s.num_critics, hidden=s.critic_hidden, lr=s.critic_lr,
                                grad_clip=s.grad_clip, name=name)

    def init(key, hyper):
        params, opt_state = critics.init(key, obs_dim, action_dim)
        hyper = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hyper)
        return ToyState(params, params, opt_state, hyper, jnp.zeros((), jnp.int32))

    def best(params, key, obs):
        candidates = jax.random.uniform(key, (s.num_candidates, action_dim), minval=-1.0, maxval=1.0)
        return candidates[jnp.argmax(jnp.min(critics.apply(params, obs, candidates), axis=-1))]

    def act(state, key, obs, greedy=False):
        key_best, key_noise = jax.random.split(key)
        a = best(state.critic_params, key_best, obs)
        if greedy:
            return a
        noise = state.hyper.exploration_noise * jax.random.normal(key_noise, a.shape)
        return jnp.clip(a + noise, -1.0, 1.0)

    def update(state, key, batch):
        keys = jax.random.split(key, batch.obs.shape[0])
        a_next = jax.vmap(lambda k, o: best(state.target_critic_params, k, o))(keys, batch.next_obs)
        target_q_t = critics.apply(state.target_critic_params, batch.next_obs, a_next)
        params, opt_state, metrics = critics.step(state.critic_params, state.critic_opt_state, batch, target_q_t,
                                                  state.hyper.gamma)
        target = base.polyak(params, state.target_critic_params, state.hyper.tau)
        return state.replace(critic_params=params, target_critic_params=target, critic_opt_state=opt_state,
                             updates=state.updates + 1), metrics

    return base.Agent(name="toy", init=init, act=act, update=update, hyper=ToyHyper(), check_hyper=check_hyper)


SPECS = (base.AgentSpec(name="toy", build=build, settings=ToySettings, hyper=ToyHyper(), check_hyper=check_hyper),)
