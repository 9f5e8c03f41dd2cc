"""The environment interface of the loop, the evaluation, ``load_policy`` and the benchmarks.

A task name picks its backend:

    cheetah-run, dmc:cheetah-run      the DeepMind Control Suite (``rfm_jax.envs.dmc``)
    gym:Hopper-v5                     a registered Gymnasium id (``rfm_jax.envs.gym``)
    gym:package.module:EnvClass       a Gymnasium env class of the user's own module

Every backend gives, for a task and its keyword arguments (``env_kwargs``, Gymnasium only):
``check(name, env_kwargs)`` (a one-line ValueError), ``spec(name, env_kwargs) -> EnvSpec`` and
``BatchedEnv(name, seeds, num_envs, stream, env_kwargs, render)``: ``S x E`` envs stepped on the
host with actions [S, E, A] in [-1, 1], returning a ``StepResult``.  A transition stores the
``discount`` (0 at a true terminal, 1 otherwise, also at a time limit) and the true next
observation; finished episodes reset by themselves.  ``get_run_state(s)`` is one run's
checkpoint record (None where the env cannot be saved: that run resumes from fresh episodes),
``set_run_states`` restores them.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import numpy as np

PREFIXES = {"dmc": "rfm_jax.envs.dmc", "gym": "rfm_jax.envs.gym"}


class EnvSpec(NamedTuple):
    obs_dim: int
    action_dim: int
    episode_length: int  # time limit in env steps


class StepResult(NamedTuple):
    """One batched step; every array has leading shape [S, E].

    next_obs: the true observation after the action (also at a time limit), for the transition.
    obs: where to act next: ``next_obs``, or the first observation of a new episode after a reset.
    valid: False where the physics diverged (store no transition).  done: the episode ended.
    episode_return: return of the episode that ended (NaN where none ended or it diverged).
    """

    next_obs: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    obs: np.ndarray
    valid: np.ndarray
    done: np.ndarray
    episode_return: np.ndarray


def env_seed(seed: int, index: int, stream: int = 0) -> int:
    """Deterministic 32-bit env seed for (run seed, env index, stream); stream 0 trains, >0 evaluates."""
    return int(np.random.SeedSequence([seed, index, stream]).generate_state(1)[0])


def backend(task: str):
    """(backend module, the name within it) of a task: ``gym:X`` -> gym, ``dmc:X`` or a bare name -> DMC."""
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be a non-empty string, got {task!r}")
    prefix, sep, rest = task.partition(":")
    if sep and prefix in PREFIXES:
        return importlib.import_module(PREFIXES[prefix]), rest
    return importlib.import_module(PREFIXES["dmc"]), task


def check_task(task: str, env_kwargs: dict | None = None) -> None:
    """Raise a one-line ValueError naming what is wrong with ``task`` (unknown name, unsupported
    spaces, bad keyword arguments), before anything is compiled."""
    module, name = backend(task)
    module.check(name, dict(env_kwargs or {}))


def spec(task: str, env_kwargs: dict | None = None) -> EnvSpec:
    """Observation size, action size and episode length of a task."""
    module, name = backend(task)
    return module.spec(name, dict(env_kwargs or {}))


def make(task: str, seeds, num_envs: int, stream: int = 0, env_kwargs: dict | None = None, render: bool = False):
    """The batched envs of ``task``: env (s, e) seeded by ``env_seed(seeds[s], e, stream)``;
    ``render``: the first env of each run can be filmed (``Recorder.add(env.frame_source(s))``)."""
    if num_envs < 1:
        raise ValueError(f"BatchedEnv: `num_envs` must be >= 1, got {num_envs}.")
    module, name = backend(task)
    return module.BatchedEnv(name, seeds, num_envs, stream, env_kwargs=dict(env_kwargs or {}), render=render)
