"""Environments on the host: the DeepMind Control Suite and Gymnasium behind one interface
(``rfm_jax.envs.base``; a task name picks the backend: ``cheetah-run``, ``gym:Hopper-v5``,
``gym:package.module:EnvClass``)."""

from rfm_jax.envs.base import (
    INVALID_LIMIT,
    INVALID_WINDOW,
    EnvFailure,
    EnvSpec,
    StepResult,
    backend,
    check_task,
    env_seed,
    make,
    spec,
)
from rfm_jax.envs.dmc import PAPER_TASKS, TASKS, BatchedEnv
from rfm_jax.envs.render import GL_BACKEND, Recorder, select_gl_backend

__all__ = ["GL_BACKEND", "INVALID_LIMIT", "INVALID_WINDOW", "PAPER_TASKS", "TASKS", "BatchedEnv", "EnvFailure",
           "EnvSpec", "Recorder", "StepResult", "backend", "check_task", "env_seed", "make", "select_gl_backend",
           "spec"]
