"""Environments: the DeepMind Control Suite on the host."""

from rfm_jax.envs.dmc import PAPER_TASKS, TASKS, BatchedEnv, EnvSpec, StepResult, check_task, env_seed, spec
from rfm_jax.envs.render import GL_BACKEND, Recorder, select_gl_backend

__all__ = ["GL_BACKEND", "PAPER_TASKS", "TASKS", "BatchedEnv", "EnvSpec", "Recorder", "StepResult", "check_task",
           "env_seed", "select_gl_backend", "spec"]
