"""What every agent's config shares: the run protocol (task, seeds, steps, evaluation, logging),
``agent`` and ``hyper`` generated from the agent's own dataclasses (``rfm_jax.agents.SPECS``: the
one place a default is written), ``sweep`` (hyperparameter values run as one program) and the
preset mechanics.  A preset file ``configs/<name>.py`` holds only overrides:

    CPU = {"total_steps": 40_000, "agent.actor_width": 128, ...}    # flattened field names
    get_config = common.presets("rfm", cpu=CPU, smoke=SMOKE)

``--config=experiments/configs/<name>.py:ARG`` with ARG a task (the agent's defaults at the
reference protocol), or ``PRESET[,TASK]``.  A ``gym:`` task takes the Gym-MuJoCo protocol
(``protocol``), and the cpu preset on it ``CPU_GYM`` on top of the preset's own overrides.
"""

import dataclasses
import types
import typing

import jax
from ml_collections import config_dict

from rfm_jax import agents
from rfm_jax.training import run_config
from rfm_jax.training.run_config import RunConfig
from rfm_jax.training.sweeps import sweep_values  # noqa: F401 - configs and scripts import it from here


def protocol(task: str) -> config_dict.ConfigDict:
    """The run fields of every agent at the reference protocol (docs/method.md sections 7 and 9),
    generated from ``RunConfig`` (each field's default and comment live there); on a gym: task the
    Gym-MuJoCo protocol (``run_config.GYM_PROTOCOL``)."""
    c = config_dict.ConfigDict()
    hints = typing.get_type_hints(RunConfig)
    values = {**{f.name: f.default for f in dataclasses.fields(RunConfig)}, **run_config.defaults(task), "task": task}
    for name, value in values.items():
        if name == "env_kwargs":  # a dict the command line may set whole
            c[name] = config_dict.FieldReference({}, field_type=object)
        elif value is None:  # str | None
            c[name] = config_dict.placeholder(next(t for t in typing.get_args(hints[name]) if t is not type(None)))
        else:
            c[name] = value
    return c


# The cpu preset on a gym: task: the protocol's evaluation at 100k steps (README's Gymnasium study).
CPU_GYM = {"total_steps": 100_000, "replay_capacity": 100_000, "eval_every": 10_000, "eval_episodes": 10,
           "checkpoint_every": 10_000}


def reference(algo: str, task: str = "cheetah-run") -> config_dict.ConfigDict:
    """The reference protocol on ``task`` with agent ``algo``'s default settings and hyper fields."""
    spec = agents.SPECS[algo]
    c = protocol(task)
    c.algo = algo  # agent in rfm_jax.agents.SPECS
    types = typing.get_type_hints(spec.settings)
    c.agent = config_dict.ConfigDict({k: _field(v, types[k]) for k, v in spec.default_settings().items()})
    for old, new in agents.base.RENAMED.items():  # the old names, for one release (a DeprecationWarning)
        if new in c.agent:
            c.agent[old] = config_dict.placeholder(type(c.agent[new]) if c.agent[new] is not None else int)
    hyper_types = typing.get_type_hints(type(spec.hyper))
    c.hyper = config_dict.ConfigDict({k: _field(v, hyper_types[k]) for k, v in spec.default_hyper().items()})
    return add_sweep(c)


def _field(value, annotation):
    """A config field holding ``value``: a typed placeholder when the field may be None, an
    untyped one when it takes several types (e.g. a number or "none")."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return value
    kinds = [t for t in typing.get_args(annotation) if t is not type(None) and t is not jax.Array]
    if len(kinds) > 1:
        return config_dict.FieldReference(value, field_type=object)
    if type(None) in typing.get_args(annotation):
        return config_dict.FieldReference(value, field_type=kinds[0])
    return value


def presets(algo: str, reference_overrides: dict | None = None, **named: dict):
    """``get_config`` of a preset file: the reference config of ``algo`` with
    ``reference_overrides`` (the ``TASK`` preset), and each named preset's flattened overrides on
    the agent's defaults (default task cartpole-swingup)."""

    def base(task: str = "cheetah-run") -> config_dict.ConfigDict:
        c = reference(algo, task)
        c.update_from_flattened_dict(reference_overrides or {})
        return c

    defaults = lambda task="cheetah-run": reference(algo, task)  # noqa: E731
    builders = {"reference": base, **{name: preset(defaults, overrides, CPU_GYM if name == "cpu" else None)
                                      for name, overrides in named.items()}}

    def get_config(arg: str | None = None) -> config_dict.ConfigDict:
        return choose(arg, builders)

    return get_config


def add_sweep(c: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """``c.sweep.<field>``: comma-separated values of a hyper field, e.g. 0.01,0.02,0.05; every
    run of the grid (seeds x values) trains in one program.  Static (agent) fields have an entry
    too, so that a sweep of one is refused with the field's name."""
    c.sweep = config_dict.ConfigDict()
    for field in (*c.hyper.keys(), *c.agent.keys()):
        c.sweep[field] = config_dict.placeholder(str)  # comma-separated values; None: not swept
    return c


def preset(builder, overrides: dict, gym_overrides: dict | None = None):
    """A config builder with flattened-field ``overrides`` applied on top of ``builder`` (and
    ``gym_overrides`` after them on a gym: task)."""

    def build(task: str = "cartpole-swingup") -> config_dict.ConfigDict:
        c = builder(task)
        c.update_from_flattened_dict(overrides)
        if gym_overrides and task.startswith("gym:"):
            c.update_from_flattened_dict(gym_overrides)
        return c

    return build


def choose(arg: str | None, builders: dict) -> config_dict.ConfigDict:
    """``ARG`` of ``--config=...:ARG``: ``PRESET[,TASK]`` or a bare task (the reference preset)."""
    name, _, task = (arg or "reference").partition(",")
    if name not in builders:  # a bare task name means the reference defaults on that task
        name, task = "reference", name
    return builders[name](task) if task else builders[name]()


def for_agent(algo: str, overrides: dict) -> dict:
    """``overrides`` without the ``agent.`` fields that agent ``algo`` does not have (to reuse
    another agent's preset sizes)."""
    fields = agents.SPECS[algo].default_settings()
    return {k: v for k, v in overrides.items() if not k.startswith("agent.") or k.split(".", 1)[1] in fields}
