"""``load_policy(workdir)``: the greedy (evaluation) policy of any run's latest checkpoint.

    policy = load_policy("runs/cpu")             # run 0; run="seed1" or an index picks another
    action = policy(obs)                          # obs [O] or [N, O] -> action [A] or [N, A] in [-1, 1]
    action = policy(obs, key, greedy=False)       # the training (exploring) action

The agent is rebuilt from ``<workdir>/setup.json`` (written by ``rfm_jax.training.loop.train``), restored
from the newest checkpoint, and the chosen run's state is sliced out of the run axis.
"""

from __future__ import annotations

import functools
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rfm_jax import envs
from rfm_jax.infra.checkpoints import complete_steps, read_state
from rfm_jax.training import loop
from rfm_jax.training.program import compile_seeds, make_step_fns


class Policy(NamedTuple):
    """``__call__`` of a loaded run: see the module docstring.  ``state`` is the agent's state of
    that run, ``step`` the checkpoint's env step."""

    agent: object
    state: object
    run: str
    step: int

    def __call__(self, obs, key=None, greedy: bool = True):
        obs = jnp.asarray(obs, jnp.float32)
        key = jax.random.PRNGKey(0) if key is None else key
        if obs.ndim == 1:
            return _act(self.agent.act, greedy)(self.state, key, obs)
        keys = jax.random.split(key, obs.shape[0])
        return jax.vmap(_act(self.agent.act, greedy), (None, 0, 0))(self.state, keys, obs)


@functools.lru_cache(maxsize=64)
def _act(act, greedy):
    """One compiled function per (agent act, mode): a policy called every env step compiles once."""
    return jax.jit(lambda state, key, obs: act(state, key, obs, greedy))


def _tuples(kwargs: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def load_policy(workdir: str, run: int | str = 0) -> Policy:
    """The policy of run ``run`` (index or name, e.g. ``"seed1"``) at the newest checkpoint."""
    path = os.path.join(workdir, loop.SETUP_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_policy: {path} not found; is {workdir!r} a run directory?")
    with open(path) as f:
        setup = json.load(f)
    names = setup["runs"]
    index = names.index(run) if isinstance(run, str) and run in names else run
    if not isinstance(index, int) or not 0 <= index < len(names):
        raise ValueError(f"load_policy: no run {run!r} in {workdir}; runs: {', '.join(names)}.")
    env_kwargs = setup.get("env_kwargs", {})
    agent, hyper, runs = loop.build_agent(setup["task"], setup["algo"], _tuples(setup["agent_kwargs"]),
                                          setup["hyper"], setup["seeds"], setup["sweep"], env_kwargs)
    spec = envs.spec(setup["task"], env_kwargs)
    fns = compile_seeds(make_step_fns(agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, **setup["step_fns"]))
    like = jax.eval_shape(fns.init, jnp.stack([jax.random.PRNGKey(r.seed) for r in runs]), hyper)
    directory = os.path.join(workdir, "checkpoints")
    steps = complete_steps(directory)  # read-only: a run may be saving into this directory now
    if not steps:
        raise FileNotFoundError(f"load_policy: no checkpoint in {workdir}/checkpoints.")
    step = steps[-1]
    state = read_state(directory, step, like)
    return Policy(agent=agent, state=jax.tree.map(lambda x: x[index], state.agent), run=names[index], step=step)
