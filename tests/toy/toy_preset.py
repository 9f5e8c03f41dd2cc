"""Presets of the toy agent (tests/agents/test_extending.py copies this file to experiments/configs/toy.py)."""

from configs import common

CPU = {"num_seeds": 2, "total_steps": 20_000, "warmup_steps": 2_000, "batch_size": 128, "replay_capacity": 20_000,
       "agent.critic_hidden": (64, 64)}
SMOKE = {**CPU, "total_steps": 300, "warmup_steps": 100, "batch_size": 16, "replay_capacity": 1_000,
         "eval_every": 150, "eval_episodes": 1, "log_every": 50, "checkpoint_every": 100,
         "agent.critic_hidden": (16, 16), "agent.num_candidates": 8}
PROBE = {"agent.critic_hidden": (32, 32), "agent.critic_lr": 3e-3, "hyper.gamma": 0.0}
PROBE_TOLERANCE = 0.1

get_config = common.presets("toy", cpu=CPU, smoke=SMOKE)
