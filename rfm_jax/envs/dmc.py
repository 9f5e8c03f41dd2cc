"""DeepMind Control Suite on the host: flat float32 observations, actions in [-1, 1], batches of
S seeds x E envs with deterministic seeding.

A DMC transition is (obs, action, reward, discount, next_obs).  ``discount`` is DMC's own: 1 on
every step of a time-limited episode including the last one (so the last transition still
bootstraps), 0 only at a true terminal.  Never store ``1 - done``.

Action repeat is 1 (an env step is a physics frame).  Actions a in [-1, 1] map to the spec's
[low, high] by low + (a + 1) (high - low) / 2.

A MuJoCo ``PhysicsError`` (the simulation diverged) ends that env's episode without a transition:
the env is reset, the step is flagged ``valid = False`` (so it is not stored) and counted.
Batched envs are picklable (``get_state`` / ``set_state``), so a run can resume mid-episode.
"""

from __future__ import annotations

import math
import pickle
import zlib

import numpy as np

from rfm_jax.envs.base import EnvSpec, HostEnvs, env_seed
from rfm_jax.envs.render import select_gl_backend

select_gl_backend()  # MUJOCO_GL before dm_control reads it: the user's, else egl, osmesa or disable

from dm_control import suite  # noqa: E402
from dm_control.rl import control  # noqa: E402

TASKS: tuple[str, ...] = tuple(sorted(f"{domain}-{task}" for domain, task in suite.ALL_TASKS))
PAPER_TASKS: tuple[str, ...] = (
    "cheetah-run",
    "cartpole-swingup",
    "fish-swim",
    "fish-upright",
    "walker-walk",
    "walker-run",
    "finger-spin",
    "finger-turn_hard",
)


def check_task(name: str) -> tuple[str, str]:
    """Split ``domain-task`` into (domain, task); raise ValueError listing the valid names."""
    if name not in TASKS:
        raise ValueError(f"Unknown DMC task {name!r}. Valid names: {', '.join(TASKS)}.")
    domain, task = name.split("-", 1)
    return domain, task


def flatten_observation(observation) -> np.ndarray:
    """DMC's OrderedDict of arrays -> one float32 vector (keys in the env's order)."""
    return np.concatenate([np.asarray(v, np.float32).ravel() for v in observation.values()])


def _load(name: str, seed: int):
    domain, task = check_task(name)
    return suite.load(domain, task, task_kwargs={"random": seed})


def check(name: str, env_kwargs: dict | None = None) -> None:
    """The backend's check (``rfm_jax.envs.base.check_task``): a known name and no keyword arguments."""
    check_task(name)
    if env_kwargs:
        raise ValueError(f"config.env_kwargs applies to gym: tasks only; {name} is a DMC task, got {env_kwargs}")


def spec(name: str, env_kwargs: dict | None = None) -> EnvSpec:
    """Observation size, action size and episode length of a task."""
    check(name, env_kwargs)
    return _spec_of(_load(name, 0))


def _spec_of(env) -> EnvSpec:
    obs_dim = sum(int(np.prod(s.shape)) for s in env.observation_spec().values())
    action_dim = int(np.prod(env.action_spec().shape))
    episode_length = math.ceil(env._step_limit)  # noqa: SLF001  (time limit / control timestep, a float)
    return EnvSpec(obs_dim, action_dim, episode_length)


class BatchedEnv(HostEnvs):
    """``num_seeds x num_envs`` dm_control envs stepped in a Python loop (host side).

    Env (s, e) is seeded with ``env_seed(seeds[s], e, stream)``.  Call ``reset()`` once, then
    ``step(actions)`` with actions of shape [S, E, A] in [-1, 1]; finished episodes reset by
    themselves.  ``physics_errors`` [S] counts diverged steps per seed.
    """

    def __init__(self, name: str, seeds, num_envs: int, stream: int = 0, env_kwargs: dict | None = None,
                 render: bool = False):
        check(name, env_kwargs)
        if num_envs < 1:
            raise ValueError(f"BatchedEnv: `num_envs` must be >= 1, got {num_envs}.")
        self.envs = [[_load(name, env_seed(s, e, stream)) for e in range(num_envs)] for s in seeds]
        action_spec = self.envs[0][0].action_spec()
        self._setup(name, seeds, num_envs, action_spec.minimum, action_spec.maximum)
        self.spec = _spec_of(self.envs[0][0])

    def _reset_one(self, env) -> np.ndarray:
        return flatten_observation(env.reset().observation)

    def _step_one(self, env, action):
        try:
            ts = env.step(action)
        except control.PhysicsError:
            return None
        return flatten_observation(ts.observation), ts.reward or 0.0, ts.discount, ts.last()

    def get_state(self) -> bytes:
        """Everything needed to continue exactly: physics, task RNGs, step counters, returns."""
        return zlib.compress(pickle.dumps((self.envs, self.returns, self.physics_errors, self.obs)), 1)

    def set_state(self, blob: bytes) -> None:
        self.envs, self.returns, self.physics_errors, self.obs = pickle.loads(zlib.decompress(blob))

    def get_run_state(self, s: int) -> bytes:
        """``get_state`` of run (seed row) ``s`` alone: what a checkpoint stores per run."""
        return zlib.compress(pickle.dumps(self._run_state(s)), 1)

    def set_run_states(self, blobs: list[bytes]) -> list[bool]:
        """Restore every row from ``get_run_state`` blobs (one per seed, in order; after ``reset``);
        returns which rows were restored (all)."""
        self._check_blobs(blobs)
        for s, blob in enumerate(blobs):
            self._restore_run(s, pickle.loads(zlib.decompress(blob)))
        return [True] * len(blobs)
