"""Gymnasium on the host: any registered id (``gym:Hopper-v5``) or an env class of the user's own
module (``gym:package.module:EnvClass``), with ``env_kwargs`` passed to ``gymnasium.make`` or the
class (``max_episode_steps`` adds a time limit).

Semantics, exactly Gymnasium's:

    obs, reward, terminated, truncated, info = env.step(low + (a + 1) (high - low) / 2)
    transition (obs_t, a_t, reward, discount = 0 if terminated else 1, true next obs)

so a truncated episode (the time limit) stores its true final observation with discount 1 and
still bootstraps; both end the episode and reset.  Observations are flattened to float32 with
``gymnasium.spaces.flatten`` (a Box, or a Dict / Tuple of Boxes).  A non-finite observation or
reward (the simulation diverged) is handled as DMC's ``PhysicsError``: no transition, a reset and
a count in ``physics_errors``.  The first reset of env (s, e) is ``reset(seed=env_seed(seed, e,
stream))``, later ones continue the env's own generator, so every run, env and stream is
deterministic.

Refused in one line before anything compiles: an unknown id or class, bad keyword arguments, an
action space that is not a bounded float Box, an observation space that is not a Box or a Dict /
Tuple of Boxes, image observations, and an env without a time limit.

Checkpoints: an env's state is pickled with every attribute (Gymnasium's ``EzPickle``, which would
rebuild a fresh env from its constructor arguments, is bypassed), so Gymnasium's MuJoCo envs
resume mid-episode exactly.  An env that does not pickle is named in one line at the first
checkpoint; its run then resumes from fresh episodes (the replay buffer, networks and metrics are
kept).
"""

from __future__ import annotations

import copyreg
import difflib
import importlib
import io
import logging
import math
import pickle
import zlib

import numpy as np

from rfm_jax.envs.base import EnvSpec, HostEnvs, env_seed

logger = logging.getLogger(__name__)


def _gym():
    import gymnasium

    return gymnasium


def _constructor(name: str):
    """(callable(**kwargs) -> env, whether it is a class needing its own time limit)."""
    gym = _gym()
    if ":" in name:
        module_name, _, attr = name.rpartition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # noqa: BLE001 - ImportError, or anything the user's module raises on import
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(f"gym:{name}: cannot import module {module_name!r} ({type(error).__name__}: "
                             f"{first[:300]})") from None
        target = getattr(module, attr, None)
        if isinstance(target, type):
            return target, True
        if attr not in gym.registry:
            raise ValueError(f"gym:{name}: {module_name!r} defines no class {attr!r} and registers no such id")
        return (lambda **kw: gym.make(attr, **kw)), False
    if name not in gym.registry:
        close = difflib.get_close_matches(name, list(gym.registry), n=3)
        raise ValueError(f"gym:{name} is not a registered Gymnasium id"
                         + (f"; did you mean {' or '.join('gym:' + c for c in close)}?" if close else "")
                         + " (an env class of your own: gym:package.module:EnvClass)")
    return (lambda **kw: gym.make(name, **kw)), False


def make_env(name: str, env_kwargs: dict, render: bool = False):
    """One Gymnasium env of ``gym:<name>`` (a time limit from ``env_kwargs['max_episode_steps']``)."""
    gym = _gym()
    build, is_class = _constructor(name)
    kwargs = dict(env_kwargs)
    steps = kwargs.pop("max_episode_steps", None) if is_class else None
    try:
        env = build(**kwargs, **({"render_mode": "rgb_array"} if render else {}))
    except TypeError as error:
        if render:  # a class that takes no render_mode: no frames (the recorder warns once), but it trains
            return make_env(name, env_kwargs)
        raise ValueError(f"gym:{name}: bad config.env_kwargs {env_kwargs} ({error})") from None
    except Exception as error:  # noqa: BLE001 - gymnasium's own errors, or anything a user's constructor raises
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"gym:{name}: making the env failed ({type(error).__name__}: {first[:300]})") from None
    if steps is not None:
        env = gym.wrappers.TimeLimit(env, int(steps))
    return env


def _unsupported_observation(space, path: str = "observation") -> str | None:
    """Why ``space`` cannot be flattened to a float vector, or None."""
    spaces = _gym().spaces
    if isinstance(space, spaces.Box):
        if (space.dtype == np.uint8 and len(space.shape) >= 2) or len(space.shape) >= 3:
            return f"{path} is an image (Box {space.shape} {space.dtype}); image observations are not supported"
        return None
    if isinstance(space, spaces.Dict):
        items = space.spaces.items()
    elif isinstance(space, spaces.Tuple):
        items = enumerate(space.spaces)
    else:
        return f"{path} space {space} is not supported (a Box, or a Dict / Tuple of Boxes)"
    for key, sub in items:
        why = _unsupported_observation(sub, f"{path}[{key!r}]")
        if why:
            return why
    return None


def episode_length(env) -> int | None:
    """The env's time limit (``spec.max_episode_steps`` or a ``TimeLimit`` wrapper's), or None."""
    steps = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    layer = env
    while steps is None and layer is not None:
        steps = getattr(layer, "_max_episode_steps", None)
        layer = getattr(layer, "env", None)
    return steps


def check_env(name: str, env) -> EnvSpec:
    """The spec of a built env; a one-line ValueError for anything rfm_jax cannot train on."""
    spaces = _gym().spaces
    act = env.action_space
    if not isinstance(act, spaces.Box) or not np.issubdtype(act.dtype, np.floating):
        raise ValueError(f"gym:{name}: action space {act} is not supported (a bounded float Box)")
    if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
        raise ValueError(f"gym:{name}: action space {act} is unbounded; rfm_jax maps actions in [-1, 1] "
                         "to finite Box bounds")
    why = _unsupported_observation(env.observation_space)
    if why:
        raise ValueError(f"gym:{name}: {why}")
    steps = episode_length(env)
    if steps is None:
        raise ValueError(f"gym:{name} has no time limit; pass --config.env_kwargs='{{\"max_episode_steps\": 1000}}'")
    return EnvSpec(int(spaces.flatdim(env.observation_space)), int(np.prod(act.shape)), math.ceil(steps))


def check(name: str, env_kwargs: dict) -> None:
    spec(name, env_kwargs)


def spec(name: str, env_kwargs: dict) -> EnvSpec:
    env = make_env(name, env_kwargs)
    try:
        return check_env(name, env)
    finally:
        env.close()


def _keep_every_attribute(obj, state):
    obj.__dict__.update(state)


class _StatePickler(pickle.Pickler):
    """Pickles an ``EzPickle`` env with its attributes (its state), not its constructor arguments."""

    def reducer_override(self, obj):
        from gymnasium.utils import EzPickle

        if isinstance(obj, EzPickle):
            return copyreg.__newobj__, (type(obj),), obj.__dict__, None, None, _keep_every_attribute
        return NotImplemented


def dumps_state(obj) -> bytes:
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return zlib.compress(buffer.getvalue(), 1)


class BatchedEnv(HostEnvs):
    """``num_seeds x num_envs`` Gymnasium envs stepped in a Python loop (host side); the interface
    of ``rfm_jax.envs.base``.  ``physics_errors`` [S] counts diverged steps per seed."""

    def __init__(self, name: str, seeds, num_envs: int, stream: int = 0, env_kwargs: dict | None = None,
                 render: bool = False):
        self.envs = [[make_env(name, env_kwargs or {}, render=render and e == 0) for e in range(num_envs)]
                     for _ in seeds]
        first = self.envs[0][0]
        self.spec = check_env(name, first)
        self.observation_space, self.action_space = first.observation_space, first.action_space
        self._setup(name, seeds, num_envs, self.action_space.low, self.action_space.high)
        self.stream, self.warned = stream, False

    def flatten(self, observation) -> np.ndarray:
        return np.asarray(_gym().spaces.flatten(self.observation_space, observation), np.float32)

    def reset(self) -> np.ndarray:
        """Reset every env with its seed; returns observations [S, E, O]."""
        self.obs = np.asarray([[self.flatten(env.reset(seed=env_seed(seed, e, self.stream))[0])
                                for e, env in enumerate(row)] for seed, row in zip(self.seeds, self.envs, strict=True)])
        self.returns[:] = 0.0
        return self.obs

    def _reset_one(self, env) -> np.ndarray:
        return self.flatten(env.reset()[0])

    def _step_one(self, env, action):
        action = action.reshape(self.action_space.shape).astype(self.action_space.dtype)
        observation, reward, terminated, truncated, _ = env.step(action)
        flat = self.flatten(observation)
        if not (np.all(np.isfinite(flat)) and np.isfinite(reward)):  # diverged
            return None
        return flat, reward, 0.0 if terminated else 1.0, terminated or truncated

    def get_run_state(self, s: int) -> bytes | None:
        """Run ``s``'s envs, returns, error count and observations; None (warned once) where they do not pickle."""
        try:
            return dumps_state(self._run_state(s))
        except Exception as error:  # noqa: BLE001 - any user env: a lock, a socket, a lambda, ...
            if not self.warned:
                self.warned = True
                logger.warning("gym:%s cannot be saved in a checkpoint (%s: %s); a resumed run starts fresh "
                               "episodes (replay, networks and metrics are kept)", self.name,
                               type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            return None

    def set_run_states(self, blobs: list) -> list[bool]:
        """Restore every row from ``get_run_state`` blobs (after ``reset``); returns which rows were
        restored.  A row saved as None, or whose state no longer unpickles (the env's code changed),
        keeps its fresh episodes, said in one warning line."""
        self._check_blobs(blobs)
        restored, why = [], None
        for s, blob in enumerate(blobs):
            try:
                if blob is None:
                    raise ValueError("the env could not be saved")
                self._restore_run(s, pickle.loads(zlib.decompress(blob)))
                restored.append(True)
            except Exception as error:  # noqa: BLE001 - a user env's unpickling may raise anything
                why = why or f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                restored.append(False)
        if not all(restored):
            logger.warning("gym:%s: %d run(s) resume from fresh episodes (%s); replay, networks and metrics are kept",
                           self.name, restored.count(False), why)
        return restored
