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
a count in ``physics_errors`` (more than ``INVALID_LIMIT`` of an env's last ``INVALID_WINDOW``
steps stop the run, ``rfm_jax.envs.base``).  The first reset of env (s, e) is
``reset(seed=env_seed(seed, e, stream))``, later ones continue the env's own generator, so every
run, env and stream is deterministic.

Refused in one line before anything compiles: an unknown id or class, bad keyword arguments, an
action space that is not a bounded float Box, an observation space that is not a Box or a Dict /
Tuple of Boxes, image observations, and an env without a time limit.  An env class (or id) of the
user's own module is first put through Gymnasium's env checker (``check_api``): the old Gym API, a
reset that ignores its seed and the like are refused in one line.  At every reset and step each
observation is checked against the declared space (shape, and a dtype that converts to float32);
a mismatch, or anything the env raises, stops the run with ``EnvFailure``.

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
import warnings
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from rfm_jax.envs.base import EnvFailure, EnvSpec, HostEnvs, env_seed, first_line

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
        raise ValueError(f"gym:{name}: making the env failed ({type(error).__name__}: {first[:300]})") from error
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


def observation_problem(space, obs, path: str = "observation") -> str | None:
    """Why ``obs`` does not fit ``space`` (a shape other than the declared one, a dtype that does not
    convert to float32, missing Dict keys, a Tuple of another length), or None.  Values outside
    the Box bounds are allowed."""
    spaces = _gym().spaces
    if isinstance(space, spaces.Box):
        array = np.asarray(obs) if not isinstance(obs, np.ndarray) else obs
        if array.shape != space.shape:
            return f"returned an {path} of shape {array.shape} where its observation_space declares {space.shape}"
        if array.dtype.kind not in "biuf":
            return f"returned an {path} of dtype {array.dtype}, which does not convert to float32"
        return None
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, Mapping) or set(obs) != set(space.spaces):
            keys = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
            return f"returned an {path} {keys} where its observation_space declares keys {sorted(space.spaces)}"
        items = ((f"{path}[{k!r}]", sub, obs[k]) for k, sub in space.spaces.items())
    else:  # Tuple (check_env refused every other space)
        if not isinstance(obs, Sequence) or len(obs) != len(space.spaces):
            return f"returned an {path} that is not a sequence of {len(space.spaces)} (its Tuple space)"
        items = ((f"{path}[{i}]", sub, obs[i]) for i, sub in enumerate(space.spaces))
    return next((why for why in (observation_problem(sub, x, p) for p, sub, x in items) if why), None)


OLD_API = ("follows the old Gym API; rfm_jax needs Gymnasium's: reset(seed=None, options=None) -> (obs, info) "
           "and step(action) -> (obs, reward, terminated, truncated, info)")


def _checker_problem(error: BaseException, caught: list) -> str:
    """One line for what Gymnasium's env checker raised (and the warnings it gave before)."""
    text = str(error)
    if "was not a tuple of the form `(obs, info)`" in text:
        kind = text.rsplit("Actual type: ", 1)[-1].strip("`. ").removeprefix("<class '").removesuffix("'>")
        return f"reset() returned a {kind}, not (obs, info): it {OLD_API}"
    if any("old step API" in str(w.message) for w in caught) or "expected 5, got 4" in text:
        return f"step() returns 4 values (obs, reward, done, info): it {OLD_API}"
    return f"Gymnasium's env checker: {first_line(error)}"


def check_api(name: str, env_kwargs: dict) -> None:
    """Gymnasium's env checker (``gymnasium.utils.env_checker.check_env``, which also runs the passive
    checker that ``gymnasium.make`` adds to registered envs) on a fresh env of a user's module; what
    it raises becomes a one-line ValueError.  Its warnings (unbounded boxes, asymmetric actions) are
    not shown.  A first observation outside the Box bounds (or of a wider dtype) only fails
    ``check_env``'s containment assertion: that is allowed when its shape and dtype fit, and the rest
    of the step API is still checked."""
    from gymnasium.utils import env_checker, passive_env_checker

    env = make_env(name, env_kwargs).unwrapped
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                env_checker.check_env(env, skip_render_check=True, skip_close_check=True)
            except Exception as error:  # noqa: BLE001 - AssertionError mostly; anything a user's env raises
                if "is not within the observation space" not in str(error):
                    raise ValueError(f"gym:{name}: {_checker_problem(error, caught)}") from None
                _check_first_step(name, env, env_checker, passive_env_checker, caught)
    finally:
        env.close()


def _check_first_step(name: str, env, env_checker, passive_env_checker, caught: list) -> None:
    """After ``check_env``'s containment assertion: the observations' shapes and dtypes, then the
    step API and its determinism, as ``check_env`` would have gone on to check."""
    try:
        why = observation_problem(env.observation_space, env.reset(seed=0)[0])
        why = why and f"reset() {why}"
        if why is None:
            passive_env_checker.env_step_passive_checker(env, env.action_space.sample())
            env_checker.check_step_determinism(env)
            return
    except Exception as error:  # noqa: BLE001
        why = _checker_problem(error, caught)
    raise ValueError(f"gym:{name}: {why}")


def check(name: str, env_kwargs: dict) -> None:
    spec(name, env_kwargs)
    if ":" in name:  # the user's own module: Gymnasium's env checker
        check_api(name, env_kwargs)


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
    of ``rfm_jax.envs.base``.  ``physics_errors`` [S] counts invalid steps per seed."""

    PREFIX = "gym:"

    def __init__(self, name: str, seeds, num_envs: int, stream: int = 0, env_kwargs: dict | None = None,
                 render: bool = False):
        self.envs = [[make_env(name, env_kwargs or {}, render=render and e == 0) for e in range(num_envs)]
                     for _ in seeds]
        first = self.envs[0][0]
        self.spec = check_env(name, first)
        self.observation_space, self.action_space = first.observation_space, first.action_space
        self._setup(name, seeds, num_envs, self.action_space.low, self.action_space.high)
        self.stream, self.warned = stream, False

    def flatten(self, observation, call: str = "env.step") -> np.ndarray:
        """The observation ``call`` returned as a float32 vector [O]; ``EnvFailure`` where it does not
        fit the space."""
        why = observation_problem(self.observation_space, observation)
        if why is not None:
            raise EnvFailure(self.task, f"{call} {why}")
        return np.asarray(_gym().spaces.flatten(self.observation_space, observation), np.float32)

    def _first_reset(self, s: int, e: int, env) -> np.ndarray:
        return self._observation_of_reset(env.reset(seed=env_seed(self.seeds[s], e, self.stream)))

    def _reset_one(self, env) -> np.ndarray:
        return self._observation_of_reset(env.reset())

    def _observation_of_reset(self, out) -> np.ndarray:
        if not isinstance(out, tuple) or len(out) != 2:
            raise EnvFailure(self.task, f"env.reset returned {type(out).__name__}, not (obs, info): it {OLD_API}")
        return self.flatten(out[0], "env.reset")

    def _step_one(self, env, action):
        action = action.reshape(self.action_space.shape).astype(self.action_space.dtype)
        out = env.step(action)
        if not isinstance(out, tuple) or len(out) != 5:
            raise EnvFailure(self.task, f"env.step returned {len(out) if isinstance(out, tuple) else type(out)} "
                             f"values, not 5: it {OLD_API}")
        observation, reward, terminated, truncated, _ = out
        flat = self.flatten(observation)
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            raise EnvFailure(self.task, f"env.step returned a reward of type {type(reward).__name__}, "
                             "not a number") from None
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
