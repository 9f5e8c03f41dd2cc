"""The host loop: R runs (seeds, or seeds x swept hyperparameter values, ``rfm_jax.training.sweeps``) x E
host envs (``rfm_jax.envs``: DMC or Gymnasium), one jitted run-vmapped call per env step, periodic
evaluation (the agent's greedy action), metrics, checkpoints and exact resume.
Any registered agent (``rfm_jax.agents``).

    for step in [start, total_steps):
        state, actions, metrics = step_fn(state, pending transitions, valid, obs)   # one XLA call
        step every env on the host -> pending transitions for the next call

The run axis is sharded over every device (``rfm_jax.infra.distributed``); with several processes each
one steps, logs and checkpoints only its own runs, and the step program is the same everywhere.

Signals: SIGINT / SIGTERM finish the current step, save a checkpoint and return (a second signal
aborts); during the compilation before the first step they stop at once (``Interrupted``).

Non-finite guard: every step's metrics (losses, Q statistics, gradient norms, ...) of every run
are checked, and the whole train state before each checkpoint.  The first NaN or inf stops the
whole run (every seed: one bad seed never trains on silently, and the others stop at the same
step) with ``NonFiniteError`` naming the metric, the run and the env step; a non-finite state is
never checkpointed, so the newest checkpoint is always the last good one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from rfm_jax import envs
from rfm_jax.agents import Agent, make_agent
from rfm_jax.infra.checkpoints import Checkpointer
from rfm_jax.infra.distributed import Layout
from rfm_jax.infra.guards import Interrupted, NonFiniteError, UserError, stop_on_signal, wait_interruptibly
from rfm_jax.infra.metrics import MetricsWriter
from rfm_jax.training import session as session_lib
from rfm_jax.training import sweeps
from rfm_jax.training.evaluation import EVAL_MODES, evaluate
from rfm_jax.training.program import StepFns, TrainState, compile_ahead, compile_seeds, empty_transitions, make_step_fns

__all__ = ["EVAL_MODES", "Interrupted", "NonFiniteError", "Trained", "build", "evaluate", "train"]
SETUP_FILE = "setup.json"  # in the workdir: task, agent name and arguments, hyper, seeds, sweep


class Trained(NamedTuple):
    """What ``train`` returns: the summary (JSON-able, every run), the final state (leading run
    axis R), the agent and the runs, so that a notebook can go on with the policy
    (``jax.vmap(agent.act, (0, 0, 0, None))(state.agent, keys, obs, True)``)."""

    summary: dict
    state: TrainState
    agent: Agent
    runs: list
    step_fns: Any


def build(task: str, algo: str, agent_kwargs: dict, hyper_values: dict | None, seeds, sweep: dict | None = None,
          env_kwargs: dict | None = None):
    """(agent, hyper, runs) of a training setup, every check done before anything compiles:
    the factory checks the static arguments, ``expand`` the swept names, ``check_hyper`` every
    value.  Raises a one-line ValueError naming the field."""
    spec = envs.spec(task, env_kwargs)
    agent = make_agent(algo, obs_dim=spec.obs_dim, action_dim=spec.action_dim, **agent_kwargs)
    unknown = sorted(set(hyper_values or {}) - set(agent.hyper.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{algo}: unknown hyperparameter(s) {', '.join(unknown)}; "
                         f"known: {', '.join(agent.hyper.__dataclass_fields__)}.")
    hyper = agent.hyper.replace(**(hyper_values or {}))
    runs = sweeps.expand(seeds, sweep, hyper)
    hyper = sweeps.hyper_per_run(hyper, runs)
    agent.check_hyper(hyper)
    return agent, hyper, runs


def _init_and_compile(fns: StepFns, layout: Layout, runs, hyper, host, eval_episodes: int, phases):
    """(initial state, ``fns`` with the step functions of ``phases`` and ``eval_act`` compiled
    ahead for these inputs); run in a worker thread by ``train`` so that a signal can stop it."""
    state = fns.init(*layout.replicated_to_global((sweeps.run_keys(runs), hyper)))
    inputs = layout.to_global((host.pending, host.valid, host.obs))
    return state, compile_ahead(fns, state, *inputs, eval_episodes=eval_episodes, phases=phases, layout=layout)


def _start_envs(task: str, mine, num_envs: int, env_kwargs: dict, ckpt: Checkpointer):
    """(this process's training envs, their first observations); a failed env is an ``EnvError``."""
    try:
        env = envs.make(task, [r.seed for r in mine], num_envs, env_kwargs=env_kwargs)  # one seed: the same envs
        return env, env.reset()
    except envs.EnvFailure as failure:
        last_good = ckpt.latest_step()
        ckpt.close()
        run = None if failure.run is None else mine[failure.run].name
        raise session_lib.env_error(failure, None, "first reset", last_good, run) from None


def _start_wandb(settings, workdir: str, mine, run_config, resume: bool, layout: Layout):
    """The W&B runs of this process's runs (None without ``settings``), started before compiling;
    a failure in any process stops every process with one line."""
    if settings is None:
        return None
    from rfm_jax.infra.wandb_sink import WandbSink

    sink, error = None, None
    try:
        sink = WandbSink(workdir, [r.name for r in mine], settings, run_config or {}, resume)
    except RuntimeError as e:
        error = e
    if layout.any_of([error is not None])[0]:
        if sink is not None:
            sink.close()
        raise UserError(str(error) if error else "W&B could not start in another process (see its log)")
    return sink


def train(
    *,
    task: str,
    seeds,
    workdir: str,
    agent_kwargs: dict,
    hyper: dict | None = None,
    algo: str = "rfm",
    sweep: dict | None = None,
    num_envs: int = 1,
    total_steps: int,
    warmup_steps: int,
    batch_size: int,
    replay_capacity: int,
    updates_per_step: int = 1,
    eval_every: int,
    eval_episodes: int,
    eval_mode: str = "fixed",
    log_every: int,
    checkpoint_every: int,
    resume: bool = False,
    stop_after: int | None = None,
    progress=None,
    video: bool = False,
    devices=None,
    env_kwargs: dict | None = None,
    wandb=None,
    run_config: dict | None = None,
) -> Trained:
    """Train agent ``algo`` (built from ``agent_kwargs``; ``hyper`` overrides its default
    hyperparameters) on ``task`` for every run of ``seeds`` x ``sweep`` ({field: [values]}), in one
    program whose run axis is sharded over ``devices`` (default: every device of every process;
    the number of runs must be a multiple of their count).  Returns ``Trained``.

    ``stop_after`` ends the session (with a checkpoint) once env step ``stop_after`` is reached (an
    absolute step, as a kill would).  A run with no checkpoint in ``workdir`` starts from scratch
    and overwrites its metrics.  A signal during an evaluation is handled after the evaluation.
    ``progress(step, total, info)`` is called every step with a dict of display values (or None).
    ``video`` films each run's first evaluation episode at every evaluation to
    ``<workdir>/videos/<run>/step<N>.mp4`` (``envs.Recorder``; without a renderer one warning is
    logged and training goes on).  ``env_kwargs`` are the Gymnasium env's keyword arguments.
    ``wandb`` (``rfm_jax.infra.wandb_sink.WandbSettings``) also logs every row to W&B, with
    ``run_config`` as each W&B run's config.
    """
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"train: `eval_mode` must be one of {EVAL_MODES}, got {eval_mode!r}.")
    hyper_values, seeds_in = dict(hyper or {}), [int(s) for s in seeds]
    env_kwargs = dict(env_kwargs or {})
    agent, hyper, runs = build(task, algo, agent_kwargs, hyper_values, seeds_in, sweep, env_kwargs)
    layout = Layout.make(len(runs), devices)
    mine = [runs[i] for i in layout.local]  # the runs this process steps, logs and checkpoints
    spec = envs.spec(task, env_kwargs)
    step_kwargs = dict(num_envs=num_envs, replay_capacity=replay_capacity, batch_size=batch_size,
                       updates_per_step=updates_per_step)
    fns = compile_seeds(make_step_fns(agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, **step_kwargs),
                        layout.sharding)
    with stop_on_signal() as stop:
        if jax.process_index() == 0:
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, SETUP_FILE), "w") as f:  # what load_policy rebuilds the agent from
                json.dump({"task": task, "algo": algo, "agent_kwargs": agent_kwargs, "hyper": hyper_values,
                           "seeds": seeds_in, "sweep": sweep, "step_fns": step_kwargs,
                           "runs": [r.name for r in runs], **({"env_kwargs": env_kwargs} if env_kwargs else {})},
                          f, indent=2)
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), layout)
        latest = ckpt.latest_step() if resume else None
        env, first_obs = _start_envs(task, mine, num_envs, env_kwargs, ckpt)
        pending = jax.tree.map(lambda x: np.zeros((len(mine), *x.shape), x.dtype),
                               empty_transitions(num_envs, spec.obs_dim, spec.action_dim))
        host = session_lib.Host(obs=first_obs, valid=np.zeros((len(mine), num_envs), bool), pending=pending,
                                last_eval=[None] * len(mine), train_returns=np.full(len(mine), np.nan), sums={})
        sink = _start_wandb(wandb, workdir, mine, run_config, latest is not None, layout)
        phases = ("train",) if latest is not None and latest >= warmup_steps else ("warmup", "train")
        if (stop_after is not None and stop_after <= warmup_steps) or total_steps <= warmup_steps:
            phases = ("warmup",)
        print(f"Compiling the step functions of {len(runs)} run(s) on {len(layout.mesh.devices)} device(s) "
              f"({', '.join(phases)}, evaluation)...", flush=True)
        t_compile = time.time()
        try:
            state, fast = wait_interruptibly(lambda: _init_and_compile(fns, layout, runs, hyper, host, eval_episodes,
                                                                       phases), stop)
        except Interrupted as error:
            last_good = ckpt.latest_step()
            ckpt.close()
            then = (f"--resume continues from checkpoint step {last_good}" if last_good is not None
                    else "no checkpoint yet: --resume starts from step 0")
            raise Interrupted(f"{error}: stopped before the first step, nothing to save; {then}") from None
        print(f"Compiled in {time.time() - t_compile:.1f} s.", flush=True)
        start, elapsed0, meta = 0, 0.0, {}
        if latest is not None:
            latest, state, records, meta = ckpt.restore_latest_good(state)
            host = session_lib.from_records(records, env)
            start, elapsed0 = int(meta["step"]), float(meta["wall_time"])
            print(f"Resumed from {workdir} at env step {start}.", flush=True)
        # Rows after the checkpoint (or every row, starting afresh) belong to a session that died.
        writer = MetricsWriter(workdir, [r.name for r in mine], resume_step=start if latest is not None else -1,
                               wandb=sink)
        session = session_lib.Session(fast, layout, env, ckpt, writer, runs, mine, host, state, stop, meta, elapsed0,
                                      task=task, workdir=workdir, eval_episodes=eval_episodes, eval_mode=eval_mode,
                                      video=video, env_kwargs=env_kwargs)
        step = session.loop(start, total_steps if stop_after is None else min(total_steps, stop_after),
                            total_steps=total_steps, warmup_steps=warmup_steps, log_every=log_every,
                            eval_every=eval_every, checkpoint_every=checkpoint_every, progress=progress)
        summary = session.finish(step, algo, sweep)
    return Trained(summary=summary, state=session.state, agent=agent, runs=runs, step_fns=fns)
