"""Gymnasium env classes that misbehave, for ``experiments/faults.py``'s ``env`` case
(``gym:fault_envs:Misbehaving``; ``experiments/`` is on ``run.py``'s path).

``Misbehaving(fault=..., after=...)`` is a point moved by its actions towards the origin (obs [3],
actions [2], reward -|x|); from its ``after``-th step on it misbehaves as ``fault`` says, until the
environment variable ``RFM_FAULTS_FIXED`` is set (its user fixed it):

    raise     step raises RuntimeError
    nan       step returns NaN observations, for good
    shape     step returns observations of shape (6,) where the space declares (3,)

``OldGymApi`` follows the old Gym API (reset returns the observation alone, step four values).
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

FIXED = "RFM_FAULTS_FIXED"


class Misbehaving(gym.Env):
    def __init__(self, fault: str = "raise", after: int = 250):
        self.fault, self.after, self.calls = fault, after, 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 2)
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([*self.x, np.linalg.norm(self.x)], np.float32)

    def step(self, action):
        self.calls += 1
        self.x = np.clip(self.x + 0.1 * np.asarray(action, np.float64), -2.0, 2.0)
        obs, reward = self._obs(), -float(np.linalg.norm(self.x))
        if self.calls >= self.after and not os.environ.get(FIXED):
            if self.fault == "raise":
                raise RuntimeError(f"lost the simulator after {self.calls} steps")
            obs = np.full(3, np.nan, np.float32) if self.fault == "nan" else np.tile(obs, 2)
        return obs, reward, False, False, {}


class OldGymApi(Misbehaving):
    def reset(self, seed=None, options=None):
        return super().reset(seed=seed)[0]

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or truncated, info
