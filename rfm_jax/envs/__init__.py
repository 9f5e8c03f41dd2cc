"""Environments: the DeepMind Control Suite on the host."""

from rfm_jax.envs.dmc import PAPER_TASKS, TASKS, BatchedEnv, EnvSpec, StepResult, check_task, env_seed, spec

__all__ = ["PAPER_TASKS", "TASKS", "BatchedEnv", "EnvSpec", "StepResult", "check_task", "env_seed", "spec"]
