"""The environment interface of the loop, the evaluation, ``load_policy`` and the benchmarks.

A task name picks its backend:

    cheetah-run, dmc:cheetah-run      the DeepMind Control Suite (``rfm_jax.envs.dmc``)
    gym:Hopper-v5                     a registered Gymnasium id (``rfm_jax.envs.gym``)
    gym:package.module:EnvClass       a Gymnasium env class of the user's own module
    mjx:cheetah-run                   ported DMC tasks simulated by MuJoCo XLA (``rfm_jax.envs.mjx``)

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

PREFIXES = {"dmc": "rfm_jax.envs.dmc", "gym": "rfm_jax.envs.gym", "mjx": "rfm_jax.envs.mjx"}


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
    ``render``: the first env of each run can be filmed (``Recorder.add(env.frame_source(s))``).
    A constructor that fails raises ``EnvFailure``."""
    if num_envs < 1:
        raise ValueError(f"BatchedEnv: `num_envs` must be >= 1, got {num_envs}.")
    module, name = backend(task)
    try:
        return module.BatchedEnv(name, seeds, num_envs, stream, env_kwargs=dict(env_kwargs or {}), render=render)
    except EnvFailure:
        raise
    except Exception as error:  # noqa: BLE001 - a user's constructor may raise anything
        what = str(error).removeprefix(f"{task}: ") if isinstance(error, ValueError) else first_line(error)
        raise EnvFailure(task, f"making the envs failed: {what}") from error


INVALID_LIMIT = 100  # an env with more than INVALID_LIMIT invalid steps ...
INVALID_WINDOW = 1000  # ... among its last INVALID_WINDOW steps stops the run (EnvFailure)


class EnvFailure(RuntimeError):
    """An env misbehaved: it raised in its constructor, ``reset`` or ``step`` (the exception is
    ``__cause__``), returned an observation its space does not declare, or passed the invalid-step
    bound.  ``run`` and ``env`` index the slot (None where unknown); the message is one line."""

    def __init__(self, task: str, what: str, run: int | None = None, env: int | None = None):
        super().__init__(f"{task}: {what}")
        self.task, self.what, self.run, self.env = task, what, run, env


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__


class HostEnvs:
    """The batched bookkeeping every backend shares: ``S x E`` envs (``self.envs[s][e]``) stepped in
    a Python loop, the action rescale, per-env returns, auto-resets, divergence counts and the
    invalid-step bound.  A backend sets ``envs`` and ``PREFIX`` and calls ``_setup`` in its
    constructor, then defines

        _step_one(env, action [A] in [low, high]) -> (next_obs [O] float32, reward, discount, last)
                                                     or None where the step is invalid (diverged)
        _reset_one(env) -> the first observation [O] of a new episode
        _first_reset(s, e, env) -> the same, for the seeded first reset of ``reset()``

    Whatever an env raises becomes ``EnvFailure`` naming the call, the run and the env; so does a
    reset that returns a non-finite observation, and an env whose last ``INVALID_WINDOW`` steps hold
    more than ``INVALID_LIMIT`` invalid ones (``physics_errors`` counts them all).
    """

    PREFIX = ""

    def _setup(self, name: str, seeds, num_envs: int, low, high) -> None:
        self.name, self.seeds, self.num_envs = name, [int(s) for s in seeds], num_envs
        self.task = self.PREFIX + name
        self.low = np.asarray(low, np.float64).ravel()
        self.high = np.asarray(high, np.float64).ravel()
        self.action_dim = self.low.size
        self.returns = np.zeros((len(self.seeds), num_envs), np.float64)
        self.physics_errors = np.zeros(len(self.seeds), np.int64)
        self.invalid = InvalidWindow(len(self.seeds), num_envs)
        self.obs = None

    def rescale(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] -> [low, high] of the action bounds (clipped first): low + (a + 1) (high - low) / 2."""
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        return self.low + (action + 1.0) * 0.5 * (self.high - self.low)

    def _call(self, what: str, s: int, e: int, fn, *args):
        """``fn(*args)``; anything it raises becomes an ``EnvFailure`` of slot (s, e)."""
        try:
            return fn(*args)
        except EnvFailure as failure:
            failure.run, failure.env = s, e
            raise
        except Exception as error:  # noqa: BLE001 - a user's env may raise anything
            raise EnvFailure(self.task, f"env.{what} raised {first_line(error)}", s, e) from error

    def _reset_checked(self, s: int, e: int, fn, *args) -> np.ndarray:
        obs = self._call("reset", s, e, fn, *args)
        if not np.all(np.isfinite(obs)):
            raise EnvFailure(self.task, "env.reset returned a non-finite observation", s, e)
        return obs

    def reset(self) -> np.ndarray:
        """Reset every env (its seeded first reset); returns observations [S, E, O]."""
        self.obs = np.asarray([[self._reset_checked(s, e, self._first_reset, s, e, env) for e, env in enumerate(row)]
                               for s, row in enumerate(self.envs)], np.float32)
        self.returns[:] = 0.0
        return self.obs

    def _first_reset(self, s: int, e: int, env) -> np.ndarray:
        return self._reset_one(env)

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every env with actions [S, E, A] in [-1, 1]; finished or diverged episodes reset."""
        actions = np.asarray(actions)
        expected = (len(self.seeds), self.num_envs, self.action_dim)
        if actions.shape != expected:
            raise ValueError(f"BatchedEnv.step: actions must have shape {expected}, got {actions.shape}.")
        if self.obs is None:
            raise RuntimeError("BatchedEnv.step: call reset() first.")
        shape = expected[:2]
        next_obs, new_obs = np.empty_like(self.obs), np.empty_like(self.obs)
        reward, discount = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        valid, done = np.ones(shape, bool), np.zeros(shape, bool)
        episode_return = np.full(shape, np.nan, np.float64)
        for s, row in enumerate(self.envs):
            for e, env in enumerate(row):
                out = self._call("step", s, e, self._step_one, env, self.rescale(actions[s, e]))
                if out is None:  # diverged: no transition, a new episode
                    self.physics_errors[s] += 1
                    valid[s, e], done[s, e] = False, True
                    next_obs[s, e] = self.obs[s, e]
                    new_obs[s, e] = self._reset_checked(s, e, self._reset_one, env)
                    self.returns[s, e] = 0.0
                    continue
                next_obs[s, e], reward[s, e], discount[s, e], last = out
                self.returns[s, e] += reward[s, e]
                if last:
                    done[s, e] = True
                    episode_return[s, e], self.returns[s, e] = self.returns[s, e], 0.0
                    new_obs[s, e] = self._reset_checked(s, e, self._reset_one, env)
                else:
                    new_obs[s, e] = next_obs[s, e]
        self.obs = new_obs
        self.invalid.add(~valid, self.task)
        return StepResult(next_obs, reward, discount, new_obs.copy(), valid, done, episode_return)

    def frame_source(self, s: int):
        """What ``Recorder.add`` films for run ``s``: its first env."""
        return self.envs[s][0]

    def _run_state(self, s: int) -> tuple:
        """Run ``s``'s envs, returns, divergence count, observations and invalid-step window: what its
        checkpoint record holds."""
        return self.envs[s], self.returns[s], self.physics_errors[s], self.obs[s], self.invalid.row(s)

    def _restore_run(self, s: int, state: tuple) -> None:
        self.envs[s], self.returns[s], self.physics_errors[s], self.obs[s], *window = state
        if window:  # absent in checkpoints written before the bound existed: an empty window
            self.invalid.set_row(s, window[0])

    def _check_blobs(self, blobs: list) -> None:
        if len(blobs) != len(self.seeds) or self.obs is None:
            raise ValueError(f"BatchedEnv.set_run_states: call reset() first and pass {len(self.seeds)} blobs.")


class InvalidWindow:
    """Which of each env's last ``INVALID_WINDOW`` steps were invalid (a ring buffer [S, E, W] and
    its counts [S, E]); ``add`` raises ``EnvFailure`` once an env holds more than ``INVALID_LIMIT``."""

    def __init__(self, num_runs: int, num_envs: int):
        self.ring = np.zeros((num_runs, num_envs, INVALID_WINDOW), bool)
        self.count = np.zeros((num_runs, num_envs), np.int64)
        self.pos = 0

    def add(self, invalid: np.ndarray, task: str) -> None:
        """Record one step's invalid flags [S, E]."""
        self.count += invalid.astype(np.int64) - self.ring[:, :, self.pos]
        self.ring[:, :, self.pos] = invalid
        self.pos = (self.pos + 1) % INVALID_WINDOW
        if invalid.any() and self.count.max() > INVALID_LIMIT:
            s, e = np.unravel_index(int(np.argmax(self.count)), self.count.shape)
            raise EnvFailure(task, f"{self.count[s, e]} of the env's last {INVALID_WINDOW} steps were invalid "
                             "(a non-finite observation or reward, or diverged physics), more than the bound of "
                             f"{INVALID_LIMIT}", int(s), int(e))

    def row(self, s: int) -> tuple:
        return self.ring[s].copy(), self.pos

    def set_row(self, s: int, saved: tuple) -> None:
        ring, self.pos = saved
        self.ring[s], self.count[s] = ring, ring.sum(axis=-1)
