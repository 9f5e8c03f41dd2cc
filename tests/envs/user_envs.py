"""Gymnasium env classes of a user's own module, as rfm_jax sees them (``gym:user_envs:Reach`` with
this directory on PYTHONPATH): none is registered with Gymnasium."""

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
