"""MuJoCo XLA (MJX) backend: ``mjx:cartpole-swingup`` and the other ported DeepMind Control Suite
tasks, simulated by MJX in JAX with dm_control's own models, so returns are comparable with the
``dmc:`` backend's (float32 physics instead of MuJoCo's float64: trajectories agree closely for a
short horizon, then drift apart as two float64 runs with different round-off would).

The S x E envs of a ``BatchedEnv`` are stepped by one jitted, vmapped call per env step, plus one
call that draws new spare episodes after a step where an episode ended (compiled once per task and
batch shape, shared by every ``BatchedEnv`` of the process); the pure functions
behind it are ``rfm_jax.envs.mjx_core`` (reset, step with auto-reset, refill), the task ports
``rfm_jax.envs.mjx_tasks``.  Semantics are the ``dmc:`` backend's: dm_control's time limit (1000
env steps for the ported tasks) with discount 1 and the true final observation, action repeat =
dm_control's n_sub_steps, actions a in [-1, 1] -> low + (a + 1) (high - low) / 2 (clipped first),
a diverged step (dm_control's ``PhysicsError``) is invalid, resets the env and is counted in
``physics_errors``, bounded by ``rfm_jax.envs.base.InvalidWindow``.  Env (s, e) draws its episodes
from the key ``PRNGKey(env_seed(seeds[s], e, stream))``: fresh random initial states per run, env,
stream and episode.  Checkpoints (``get_run_state``) hold the whole state, so a run resumes
mid-episode bit for bit.  No keyword arguments, no video.

Needs the ``mjx`` extra (``mujoco-mjx``), imported only when an ``mjx:`` task is used.
"""

from __future__ import annotations

import functools
import pickle
import zlib

import numpy as np

from rfm_jax.envs.base import EnvSpec, InvalidWindow, StepResult
from rfm_jax.envs.mjx_tasks import PORTED, load_mjx

TASKS: tuple[str, ...] = PORTED  # the supported names
_FINGER = ("not ported to MJX yet (its touch observation is the last physics substep's contact force and its "
           "initial state is redrawn until collision-free); dmc:{} runs it on the host")
REFUSED: dict[str, str] = {name: _FINGER.format(name) for name in ("finger-spin", "finger-turn_easy",
                                                                   "finger-turn_hard")}  # DMC tasks named, and why


def check(name: str, env_kwargs: dict | None = None) -> None:
    """A supported task, no keyword arguments and the mjx extra installed; else a one-line ValueError."""
    if name in REFUSED:
        raise ValueError(f"mjx:{name} is not supported: {REFUSED[name]}")
    if name not in TASKS:
        raise ValueError(f"Unknown mjx: task {name!r}. Supported: {', '.join('mjx:' + t for t in TASKS)} "
                         "(every DMC task runs on the host as dmc:<task>).")
    if env_kwargs:
        raise ValueError(f"config.env_kwargs applies to gym: tasks only; mjx:{name} takes none, got {env_kwargs}")
    load_mjx()


@functools.cache
def _port(name: str):
    from rfm_jax.envs.mjx_tasks import port

    return port(name)


def spec(name: str, env_kwargs: dict | None = None) -> EnvSpec:
    """Observation size, action size and episode length: dm_control's for the task."""
    check(name, env_kwargs)
    port = _port(name)
    return EnvSpec(port.obs_dim, int(port.model.nu), port.episode_length)


@functools.cache
def program(name: str):
    """(core, its jitted programs over [S, E]: ``Core.programs``) of a task: one per process, so
    every ``BatchedEnv`` of it reuses the compiled programs."""
    from rfm_jax.envs.mjx_core import Core

    load_mjx()
    core = Core(_port(name))
    return core, core.programs(2)


class BatchedEnv:
    """``num_seeds x num_envs`` MJX envs of ``mjx:<name>``, the interface of ``rfm_jax.envs.base``:
    ``reset() -> obs [S, E, O]``, ``step(actions [S, E, A]) -> StepResult`` (numpy arrays), each one
    jitted call on the device.  ``physics_errors`` [S] counts invalid steps per seed."""

    def __init__(self, name: str, seeds, num_envs: int, stream: int = 0, env_kwargs: dict | None = None,
                 render: bool = False):
        check(name, env_kwargs)
        if render:
            raise ValueError(f"mjx:{name}: video is not supported for mjx: tasks (--config.video=false)")
        if num_envs < 1:
            raise ValueError(f"BatchedEnv: `num_envs` must be >= 1, got {num_envs}.")
        from rfm_jax.envs.mjx_core import env_keys

        self.name, self.task = name, "mjx:" + name
        self.seeds, self.num_envs, self.stream = [int(s) for s in seeds], num_envs, stream
        self.spec = spec(name)
        self.action_dim = self.spec.action_dim
        self.core, self.programs = program(name)
        self.keys = env_keys(self.seeds, num_envs, stream)
        self.physics_errors = np.zeros(len(self.seeds), np.int64)
        self.invalid = InvalidWindow(len(self.seeds), num_envs)
        self.states, self.obs = None, None

    def reset(self) -> np.ndarray:
        """Every env's seeded first episode; observations [S, E, O] float32."""
        run = self.programs
        self.states = run["refill"](run["promote"](run["refill"](run["blank"](self.keys))))
        self.obs = np.asarray(self.states.now.obs)
        return self.obs

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every env with actions [S, E, A] in [-1, 1]; finished or diverged episodes reset."""
        actions = np.asarray(actions)
        expected = (len(self.seeds), self.num_envs, self.action_dim)
        if actions.shape != expected:
            raise ValueError(f"BatchedEnv.step: actions must have shape {expected}, got {actions.shape}.")
        if self.states is None:
            raise RuntimeError("BatchedEnv.step: call reset() first.")
        self.states, out = self.programs["step"](self.states, actions.astype(np.float32))
        out = StepResult(*(np.asarray(x) for x in out))
        if out.done.any():  # their spare episodes were used: draw the next ones
            self.states = self.programs["refill"](self.states)
        out = out._replace(episode_return=out.episode_return.astype(np.float64))
        self.physics_errors += (~out.valid).sum(axis=1)
        self.obs = out.obs
        self.invalid.add(~out.valid, self.task)
        return out

    def frame_source(self, s: int):
        raise ValueError(f"{self.task}: video is not supported for mjx: tasks")

    def get_run_state(self, s: int) -> bytes:
        """Run ``s``'s env states (physics, spare episodes, keys, returns), divergence count and
        invalid-step window: what its checkpoint record holds."""
        import jax

        row = jax.tree.map(lambda x: np.asarray(x[s]), self.states)
        return zlib.compress(pickle.dumps((row, self.physics_errors[s], self.invalid.row(s))), 1)

    def set_run_states(self, blobs: list[bytes]) -> list[bool]:
        """Restore every run from ``get_run_state`` blobs (one per seed, in order; after ``reset``);
        returns which were restored (all)."""
        import jax

        if len(blobs) != len(self.seeds) or self.states is None:
            raise ValueError(f"BatchedEnv.set_run_states: call reset() first and pass {len(self.seeds)} blobs.")
        rows = [pickle.loads(zlib.decompress(blob)) for blob in blobs]
        self.states = jax.tree.map(lambda *xs: jax.numpy.asarray(np.stack(xs)), *(row for row, _, _ in rows))
        for s, (_, errors, window) in enumerate(rows):
            self.physics_errors[s] = errors
            self.invalid.set_row(s, window)
        self.obs = np.asarray(self.states.now.obs)
        return [True] * len(blobs)
