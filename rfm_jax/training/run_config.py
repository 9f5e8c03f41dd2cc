"""The run protocol of every agent as one frozen dataclass: what ``experiments/run.py`` reads from
its config, ``rfm_jax.training.run.run`` checks, and ``rfm_jax.training.loop.train`` and its
session take whole.

    rc = RunConfig.for_task("cheetah-run", num_seeds=5)      # the reference protocol, 5 seeds
    rc = RunConfig.for_task("gym:Hopper-v5")                  # the Gym-MuJoCo protocol (GYM_PROTOCOL)
    rc = RunConfig.from_config(config)                        # the run fields of a run.py config

Each field is written once here, with its default and a one-line comment; the configs'
``protocol(task)`` (``experiments/configs/common.py``) is generated from these fields.  A
RunConfig is checked once, when it is made (``__post_init__``): every problem is named by its
field (``config.<field>``) in one ``RunConfigError`` (a ValueError) line, before anything is built
or compiled.  The
agent's own fields are checked by its factory.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping

EVAL_MODES = ("fixed", "fresh")  # fixed: the reference protocol's evaluation; fresh: new initial states
LOOPS = ("host", "device")  # host: envs stepped from Python; device: envs, replay and updates in one program (mjx:)
# The Gym-MuJoCo protocol of the diffusion-policy literature (docs/method.md section 9) on gym: tasks.
GYM_PROTOCOL = {"total_steps": 1_000_000, "warmup_steps": 10_000, "replay_capacity": 1_000_000, "eval_every": 10_000,
                "eval_episodes": 10, "checkpoint_every": 50_000}
COUNTS = ("num_seeds", "num_envs", "total_steps", "batch_size", "replay_capacity", "updates_per_step", "eval_every",
          "eval_episodes", "log_every", "checkpoint_every")  # integers >= 1
ADDED = {"loop": "host"}  # fields added since 0.4.0, with the value a run written before them had


class RunConfigError(ValueError):
    """The problems of a run config (``problems``: one line each); its message joins them."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run fields; defaults are the reference protocol (docs/method.md sections 7 and 9)."""

    task: str = "cheetah-run"  # cheetah-run or dmc:cheetah-run (DMC), gym:<Gymnasium id>, gym:package.module:EnvClass
    env_kwargs: dict = dataclasses.field(default_factory=dict)  # gym: kwargs, {"max_episode_steps": 500}
    seed: int = 0  # seeds are seed, seed + 1, ..., seed + num_seeds - 1
    num_seeds: int = 1  # seeds trained at once (vmapped in one XLA program, times the sweep's grid)
    num_envs: int = 1  # envs per run; each step adds num_envs transitions and runs updates_per_step updates
    total_steps: int = 250_000  # env steps per env (= frames, action repeat 1)
    warmup_steps: int = 10_000  # uniform random actions and no updates before this step
    batch_size: int = 256  # transitions per update
    replay_capacity: int = 250_000  # replay buffer slots per run
    updates_per_step: int = 1  # updates per call (per env step)
    eval_every: int = 10_000  # env steps between evaluations (the first is at step 0)
    eval_episodes: int = 25  # evaluation episodes per run (the agent's greedy action) at step 0 and after
    eval_mode: str = "fixed"  # fixed: the same initial states and policy noise at every evaluation; fresh: new ones
    log_every: int = 1_000  # env steps between training-metric rows
    video: bool = False  # film each run's first evaluation episode to <workdir>/videos/<run>/step<N>.mp4 (headless)
    checkpoint_every: int = 10_000  # env steps between checkpoints (one is also saved at the end and on SIGINT/SIGTERM)
    wandb: bool = False  # also log every row to Weights & Biases (pip install 'rfm_jax[wandb]'); one W&B run per run
    wandb_project: str = "rfm_jax"  # W&B project
    wandb_entity: str | None = None  # W&B entity (user or team); None: the logged-in user's default
    wandb_group: str | None = None  # W&B group; None: the last two parts of the workdir path
    loop: str = "host"  # host: one jitted call per env step, envs stepped on the host; device: mjx: tasks in XLA chunks

    def __post_init__(self):
        object.__setattr__(self, "env_kwargs", dict(self.env_kwargs) if isinstance(self.env_kwargs, dict)
                           else self.env_kwargs)
        problems = self.problems()
        if problems:
            raise RunConfigError(problems)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]

    @classmethod
    def for_task(cls, task: str, **overrides) -> RunConfig:
        """The protocol's defaults on ``task`` (``GYM_PROTOCOL`` on a gym: task), then ``overrides``."""
        return cls(task=task, **{**defaults(task), **overrides})

    @classmethod
    def from_config(cls, config) -> RunConfig:
        """The run fields of an ``ml_collections`` config (a field it lacks takes its default)."""
        fields = {f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config}
        kwargs = fields.get("env_kwargs")
        if kwargs is None or hasattr(kwargs, "to_dict") or isinstance(kwargs, Mapping):  # a ConfigDict, a dict
            fields["env_kwargs"] = kwargs.to_dict() if hasattr(kwargs, "to_dict") else dict(kwargs or {})
        return cls(**fields)

    def problems(self) -> list[str]:
        """Every problem of the fields, one line each naming ``config.<field>``; the task's come from
        its env backend (an unknown name, unsupported spaces, bad keyword arguments)."""
        errors = [f"config.{name} must be an integer >= 1, got {getattr(self, name)!r}" for name in COUNTS
                  if not _integer_at_least(getattr(self, name), 1)]
        if not _integer_at_least(self.seed, 0):
            errors.append(f"config.seed must be an integer >= 0, got {self.seed!r}")
        if not _integer_at_least(self.warmup_steps, 1):  # the first update needs a stored transition
            errors.append(f"config.warmup_steps must be an integer >= 1, got {self.warmup_steps!r}")
        elif _integer_at_least(self.total_steps, 1) and self.warmup_steps > self.total_steps:
            errors.append(f"config.warmup_steps ({self.warmup_steps}) exceeds config.total_steps ({self.total_steps}): "
                          "the run would never update")
        if _integer_at_least(self.replay_capacity, 1):
            for name in ("batch_size", "num_envs"):
                if _integer_at_least(getattr(self, name), 1) and getattr(self, name) > self.replay_capacity:
                    errors.append(f"config.{name} ({getattr(self, name)}) exceeds config.replay_capacity "
                                  f"({self.replay_capacity})")
        errors += _choice("eval_mode", self.eval_mode, EVAL_MODES) + _loop_problems(self.loop, self.task)
        for name in ("video", "wandb"):
            if not isinstance(getattr(self, name), bool):
                errors.append(f"config.{name} must be true or false, got {getattr(self, name)!r}")
        if self.video is True and isinstance(self.task, str) and self.task.startswith("mjx:"):
            errors.append("config.video: mjx: tasks are not filmed (MJX has no renderer here); set config.video=false")
        if self.wandb is True:
            from rfm_jax.infra.wandb_sink import missing

            errors += [missing()] if missing() else []
        return errors + _task_problems(self.task, self.env_kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def defaults(task: str) -> dict:
    """The protocol's field values on ``task`` that differ from the dataclass's (none on DMC)."""
    return dict(GYM_PROTOCOL) if isinstance(task, str) and task.startswith("gym:") else {}


def _integer_at_least(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _choice(name: str, value, choices: tuple) -> list[str]:
    return [] if value in choices else [f"config.{name} must be one of {choices}, got {value!r}"]


def _loop_problems(loop, task) -> list[str]:
    if loop == "device" and isinstance(task, str) and not task.startswith("mjx:"):
        return [f"config.loop='device' steps mjx: tasks only (its envs run inside the XLA program); {task} runs on "
                "config.loop='host'"]
    return _choice("loop", loop, LOOPS)


def _task_problems(task, env_kwargs) -> list[str]:
    """The task's problems (one line each): an unknown name, unsupported spaces, bad env_kwargs."""
    from rfm_jax import envs

    if not isinstance(env_kwargs, dict):
        return [f"config.env_kwargs must be a dict of Gymnasium keyword arguments, got {env_kwargs!r}"]
    if not isinstance(task, str) or not task:
        return [f"config.task must be a task name, got {task!r}"]
    module, name = envs.backend(task)
    if module.__name__.endswith(".dmc") and name not in envs.TASKS:
        close = difflib.get_close_matches(name, envs.TASKS, n=3)
        return [f"config.task {task!r} is not a DMC task" + (f"; did you mean {' or '.join(close)}?" if close else "")
                + f" Valid names: {', '.join(envs.TASKS)}, or gym:<Gymnasium id>"]
    try:
        envs.check_task(task, env_kwargs)
    except ValueError as error:
        return [f"config.task: {error}"]
    return []
