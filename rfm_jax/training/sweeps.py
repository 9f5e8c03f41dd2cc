"""Runs of one program: seeds x a grid of swept hyperparameter values on one leading axis R.

A sweep maps leaves of the agent's hyperparameter pytree to lists of values.  The runs are every
seed with every combination (seed-major), and one ``jit(vmap)`` over R trains them all:

    runs = expand([0, 1], {"temperature": [0.01, 0.02, 0.05]})      # 6 runs
    hyper = hyper_per_run(agent.hyper, runs)                        # leaves [6]
    state = compile_seeds(fns).init(run_keys(runs), hyper)

Each run has a name, ``seed{s}`` or ``seed{s}_temperature0.02``: metrics and TensorBoard use it.
Counts and shapes are not leaves and cannot be swept (``expand`` names the field).
``sweep_values(config)`` reads a config's ``sweep`` section (comma-separated values per field).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rfm_jax.agents.base import hyper_leaves


class Run(NamedTuple):
    seed: int
    values: dict  # swept field -> this run's value
    name: str


def _fmt(value: float) -> str:
    return f"{value:g}"


def expand(seeds, sweep: dict | None, hyper=None) -> list[Run]:
    """Every seed with every combination of the swept values (seed-major).  With ``hyper`` given,
    a swept name that is not one of its leaves raises a one-line ValueError naming it."""
    sweep = {k: [float(v) for v in vs] for k, vs in (sweep or {}).items()}
    if hyper is not None:
        leaves = hyper_leaves(hyper)
        for field in sweep:
            if field not in leaves:
                raise ValueError(f"sweep: `{field}` is not a hyperparameter leaf of this agent and cannot be swept; "
                                 f"sweepable: {', '.join(leaves)}.")
    for field, values in sweep.items():
        if not values:
            raise ValueError(f"sweep: `{field}` has no values.")
        if len(set(values)) != len(values):
            raise ValueError(f"sweep: `{field}` repeats a value: {values}.")
    names, grids = list(sweep), list(itertools.product(*sweep.values()))
    runs = []
    for seed in seeds:
        for combo in grids:
            values = dict(zip(names, combo, strict=True))
            suffix = "".join(f"_{k}{_fmt(v)}" for k, v in values.items())
            runs.append(Run(int(seed), values, f"seed{int(seed)}{suffix}"))
    return runs


def sweep_values(config) -> dict:
    """{field: [float, ...]} of the fields given in ``config.sweep``; a static field or a value
    that is not a number raises a one-line ValueError naming it."""
    out = {}
    for field, text in config.sweep.items():
        if text is None:
            continue
        if field in config.agent and field not in config.hyper:
            raise ValueError(f"config.sweep.{field}: `{field}` is static (a shape, count or mode: changing it "
                             f"recompiles) and cannot be swept; sweepable: {', '.join(config.hyper.keys())}")
        try:
            out[field] = [float(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"config.sweep.{field}: expected comma-separated numbers, got {text!r}") from None
    return out


def hyper_per_run(hyper, runs: list[Run]):
    """The hyper pytree with a leading run axis R on every leaf: the swept value of each run, or
    the shared value.  A leaf left as None (e.g. ``temperature_final``) stays None."""
    fields = hyper_leaves(hyper)
    out = {}
    for field, value in fields.items():
        if value is None and not any(field in r.values for r in runs):
            out[field] = None
            continue
        out[field] = jnp.asarray([r.values.get(field, value) for r in runs], jnp.float32)
    return hyper.replace(**out)


def run_keys(runs: list[Run]) -> jax.Array:
    """PRNG keys [R]: runs with the same seed share the key (a sweep compares values on equal noise)."""
    return jnp.stack([jax.random.PRNGKey(r.seed) for r in runs])
