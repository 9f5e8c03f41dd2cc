"""Gymnasium env classes of a user's own module, as rfm_jax sees them (``gym:user_envs:Reach`` with
this directory on PYTHONPATH): none is registered with Gymnasium."""

import os
import threading

import gymnasium as gym
import numpy as np


class Reach(gym.Env):
    """Move a point to the origin: reward -|x|, actions in [-1, 1]^2 (README's example)."""

    def __init__(self, speed: float = 0.1):
        self.speed = speed
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.x = np.clip(self.x + self.speed * np.asarray(action, np.float32), -2, 2)
        distance = float(np.linalg.norm(self.x))
        return self.x.copy(), -distance, distance < 0.05, False, {}


class Locked(Reach):
    """Holds a lock, so it cannot be pickled into a checkpoint."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lock = threading.Lock()


class Recording(gym.Env):
    """Dict observation of two boxes, actions in [-2, 2] x [0, 10]; records the actions it gets."""

    def __init__(self):
        self.observation_space = gym.spaces.Dict({"position": gym.spaces.Box(-5, 5, (2,), np.float64),
                                                  "velocity": gym.spaces.Box(-5, 5, (3,), np.float64)})
        self.action_space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))
        self.actions = []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return {"position": self.np_random.normal(size=2), "velocity": np.zeros(3)}, {}

    def step(self, action):
        self.actions.append(np.asarray(action).copy())
        return {"position": np.ones(2), "velocity": np.full(3, 2.0)}, 1.0, False, False, {}


class UnboundedAction(Reach):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class Pixels(Reach):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)


class DiscreteInDict(Reach):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-2, 2, (2,)), "mode": gym.spaces.Discrete(3)})


class FloatPixels(Reach):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(0.0, 1.0, (8, 8, 3), np.float32)


class Broken(Reach):
    def __init__(self):
        raise RuntimeError("no simulator here\nsecond line")


FIXED = "USER_ENVS_FIXED"  # set in the environment: the misbehaving envs below behave (their user fixed them)


class Faulty(Reach):
    """Reach that misbehaves (``fault``) from its ``after``-th step on, per instance, until FIXED is set."""

    after = 250

    def step(self, action):
        self.calls = getattr(self, "calls", 0) + 1
        out = super().step(action)
        return self.fault(*out) if self.calls >= self.after and not os.environ.get(FIXED) else out

    def fault(self, obs, reward, terminated, truncated, info):
        raise NotImplementedError


class RaisesLater(Faulty):
    def fault(self, *out):
        raise ConnectionError("the simulator server went away")


class NanLater(Faulty):
    after = 120

    def fault(self, obs, *rest):
        return (np.full_like(obs, np.nan), *rest)


class GrowsLater(Faulty):
    def fault(self, obs, *rest):
        return (np.concatenate([obs, obs, obs]), *rest)


class OldApi(Reach):
    """The old Gym API: reset returns the observation alone, step returns 4 values."""

    def reset(self, seed=None, options=None):
        return super().reset(seed=seed)[0]

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or truncated, info


class OldStep(Reach):
    """Gymnasium's reset, but the old 4-value step."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or truncated, info


class Unseeded(Reach):
    """Ignores the seed of reset (draws from NumPy's global generator)."""

    def reset(self, seed=None, options=None):
        self.x = np.random.uniform(-1, 1, 2).astype(np.float32)
        return self.x.copy(), {}


class WrongShape(Reach):
    def reset(self, seed=None, options=None):
        return np.append(super().reset(seed=seed)[0], 0.0).astype(np.float32), {}


class OutOfBounds(Reach):
    """Declares [-0.5, 0.5]^2 float32 and returns float64 values up to 1 (Gymnasium's check_env refuses it)."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(-0.5, 0.5, (2,), np.float32)

    def reset(self, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return obs.astype(np.float64), info


class OutOfBoundsOldStep(OutOfBounds, OldStep):
    pass


class NanReset(Reach):
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.full(2, np.nan, np.float32), {}


class RaisesInEvaluation(Reach):
    """Raises in every step of an evaluation env (seeded from rfm_jax's evaluation streams) until FIXED is set."""

    def reset(self, seed=None, options=None):
        if seed is not None:
            from rfm_jax.envs import env_seed

            self.evaluating = seed in {env_seed(s, e, 1) for s in range(4) for e in range(4)}
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if getattr(self, "evaluating", False) and not os.environ.get(FIXED):
            raise FloatingPointError("the evaluation arena has no floor")
        return super().step(action)


class RaisesForSeed3(Reach):
    """Raises from its 250th step on when it is the training env of run seed 3 (until FIXED is set)."""

    def reset(self, seed=None, options=None):
        if seed is not None:
            from rfm_jax.envs import env_seed

            self.doomed = seed == env_seed(3, 0, 0)
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.calls = getattr(self, "calls", 0) + 1
        if getattr(self, "doomed", False) and self.calls >= 250 and not os.environ.get(FIXED):
            raise ConnectionError("run 3's simulator went away")
        return super().step(action)
