"""The host loop (``RunConfig.loop = "host"``; ``"device"`` runs ``rfm_jax.training.device_loop``):
R runs (seeds, or seeds x swept hyperparameter values, ``rfm_jax.training.sweeps``) x E
host envs (``rfm_jax.envs``: DMC or Gymnasium), one jitted run-vmapped call per env step, periodic
evaluation (the agent's greedy action), metrics, checkpoints and exact resume.
Any registered agent (``rfm_jax.agents``), under one ``RunConfig`` (``rfm_jax.training.run_config``):

    rc = RunConfig.for_task("cartpole-swingup", num_seeds=2, total_steps=20_000)
    trained = train(rc, build(rc, "rfm", agent_kwargs), workdir="runs/demo")

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
never checkpointed, so the newest checkpoint is always the last good one.  A failed env (it raised,
returned an observation its space does not declare, or passed the invalid-step bound) stops the
run the same way with ``EnvError``.
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
from rfm_jax.training.run_config import RunConfig

__all__ = ["EVAL_MODES", "Interrupted", "NonFiniteError", "RunConfig", "Setup", "Trained", "build", "build_agent",
           "evaluate", "train"]
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


class Setup(NamedTuple):
    """What a run trains, built once (``build``) and passed whole: the agent and its arguments, the
    per-run hyper pytree (leaves [R]), the runs (seeds x sweep) and the env's spec."""

    algo: str
    agent_kwargs: dict
    hyper_values: dict  # the hyper fields set by the config (the rest are the agent's defaults)
    sweep: dict | None  # {field: [values]}
    agent: Agent
    hyper: Any
    runs: list
    spec: envs.EnvSpec


def build_agent(task: str, algo: str, agent_kwargs: dict, hyper_values: dict | None, seeds, sweep: dict | None = None,
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


def build(run_config: RunConfig, algo: str = "rfm", agent_kwargs: dict | None = None, hyper: dict | None = None,
          sweep: dict | None = None) -> Setup:
    """The ``Setup`` of agent ``algo`` (``agent_kwargs``; ``hyper`` overrides its default
    hyperparameters) on ``run_config``'s task, seeds and ``sweep`` ({field: [values]}): one-line
    ValueErrors naming the field, before anything compiles."""
    agent_kwargs, hyper_values = dict(agent_kwargs or {}), dict(hyper or {})
    agent, hyper_tree, runs = build_agent(run_config.task, algo, agent_kwargs, hyper_values, run_config.seeds, sweep,
                                          run_config.env_kwargs)
    return Setup(algo, agent_kwargs, hyper_values, sweep or None, agent, hyper_tree, runs,
                 envs.spec(run_config.task, run_config.env_kwargs))


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


def _start_wandb(rc: RunConfig, workdir: str, mine, wandb_config: dict | None, resume: bool, layout: Layout):
    """The W&B runs of this process's runs (None unless ``rc.wandb``), started before compiling;
    a failure in any process stops every process with one line."""
    if not rc.wandb:
        return None
    from rfm_jax.infra.wandb_sink import WandbSettings, WandbSink

    sink, error = None, None
    try:
        sink = WandbSink(workdir, [r.name for r in mine], WandbSettings(rc.wandb_project, rc.wandb_entity,
                                                                       rc.wandb_group),
                         wandb_config if wandb_config is not None else rc.to_dict(), resume)
    except RuntimeError as e:
        error = e
    if layout.any_of([error is not None])[0]:
        if sink is not None:
            sink.close()
        raise UserError(str(error) if error else "W&B could not start in another process (see its log)")
    return sink


def train(run_config: RunConfig, setup: Setup, *, workdir: str, resume: bool = False, stop_after: int | None = None,
          progress=None, devices=None, wandb_config: dict | None = None) -> Trained:
    """Train ``setup`` (``build(run_config, algo, ...)``) under ``run_config``'s protocol, every
    run of the setup (seeds x sweep) in one program whose run axis is sharded over ``devices``
    (default: every device of every process; the number of runs must be a multiple of their
    count).  Returns ``Trained``.

    ``stop_after`` ends the session (with a checkpoint) once env step ``stop_after`` is reached (an
    absolute step, as a kill would).  A run with no checkpoint in ``workdir`` starts from scratch
    and overwrites its metrics.  A signal during an evaluation is handled after the evaluation.
    ``progress(step, total, info)`` is called every step with a dict of display values (or None).
    ``run_config.video`` films each run's first evaluation episode at every evaluation to
    ``<workdir>/videos/<run>/step<N>.mp4`` (``envs.Recorder``; without a renderer one warning is
    logged and training goes on).  ``run_config.wandb`` also logs every row to W&B, with
    ``wandb_config`` (default: the run config) as each W&B run's config.
    """
    if run_config.loop == "device":
        from rfm_jax.training import device_loop

        return device_loop.train(run_config, setup, workdir=workdir, resume=resume, stop_after=stop_after,
                                 progress=progress, devices=devices, wandb_config=wandb_config)
    rc, runs = run_config, setup.runs
    layout = Layout.make(len(runs), devices)
    mine = [runs[i] for i in layout.local]  # the runs this process steps, logs and checkpoints
    spec = setup.spec
    step_kwargs = dict(num_envs=rc.num_envs, replay_capacity=rc.replay_capacity, batch_size=rc.batch_size,
                       updates_per_step=rc.updates_per_step)
    fns = compile_seeds(make_step_fns(setup.agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, **step_kwargs),
                        layout.sharding)
    with stop_on_signal() as stop:
        if jax.process_index() == 0:
            _write_setup(workdir, rc, setup, step_kwargs)
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), layout)
        latest = ckpt.latest_step() if resume else None
        env, first_obs = _start_envs(rc.task, mine, rc.num_envs, rc.env_kwargs, ckpt)
        pending = jax.tree.map(lambda x: np.zeros((len(mine), *x.shape), x.dtype),
                               empty_transitions(rc.num_envs, spec.obs_dim, spec.action_dim))
        host = session_lib.Host(obs=first_obs, valid=np.zeros((len(mine), rc.num_envs), bool), pending=pending,
                                last_eval=[None] * len(mine), train_returns=np.full(len(mine), np.nan), sums={})
        sink = _start_wandb(rc, workdir, mine, wandb_config, latest is not None, layout)
        state, fast = _compile(rc, fns, layout, setup, host, ckpt, stop, latest, stop_after)
        start, elapsed0, meta = 0, 0.0, {}
        if latest is not None:
            latest, state, records, meta = ckpt.restore_latest_good(state)
            check_same_loop(meta, rc, workdir, ckpt)
            host = session_lib.from_records(records, env)
            start, elapsed0 = int(meta["step"]), float(meta["wall_time"])
            print(f"Resumed from {workdir} at env step {start}.", flush=True)
        # Rows after the checkpoint (or every row, starting afresh) belong to a session that died.
        writer = MetricsWriter(workdir, [r.name for r in mine], resume_step=start if latest is not None else -1,
                               wandb=sink)
        session = session_lib.Session(rc, workdir, session_lib.Parts(fast, layout, env, ckpt, writer), runs, mine,
                                      host, state, stop, meta, elapsed0)
        step = session.loop(start, rc.total_steps if stop_after is None else min(rc.total_steps, stop_after),
                            progress=progress)
        summary = session.finish(step, setup.algo, setup.sweep)
    return Trained(summary=summary, state=session.state, agent=setup.agent, runs=runs, step_fns=fns)


def check_same_loop(meta: dict, rc: RunConfig, workdir: str, ckpt: Checkpointer) -> None:
    """A checkpoint written by the other loop (``meta["loop"]``; host before 0.5.0) is refused in one line."""
    written = meta.get("loop", "host")
    if written != rc.loop:
        ckpt.close()
        raise UserError(f"{workdir} was trained with config.loop={written!r}; resume it with "
                        f"--config.loop={written}")


def _write_setup(workdir: str, rc: RunConfig, setup: Setup, step_kwargs: dict) -> None:
    """``setup.json``: what ``load_policy`` rebuilds the agent from."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, SETUP_FILE), "w") as f:
        json.dump({"task": rc.task, "algo": setup.algo, "agent_kwargs": setup.agent_kwargs,
                   "hyper": setup.hyper_values, "seeds": rc.seeds, "sweep": setup.sweep, "step_fns": step_kwargs,
                   "runs": [r.name for r in setup.runs], **({"env_kwargs": rc.env_kwargs} if rc.env_kwargs else {})},
                  f, indent=2)


def _compile(rc: RunConfig, fns: StepFns, layout: Layout, setup: Setup, host, ckpt, stop, latest, stop_after):
    """(initial state, compiled step functions) of the phases this session runs; a signal while
    compiling raises ``Interrupted`` naming the checkpoint ``--resume`` continues from."""
    phases = ("train",) if latest is not None and latest >= rc.warmup_steps else ("warmup", "train")
    if (stop_after is not None and stop_after <= rc.warmup_steps) or rc.total_steps <= rc.warmup_steps:
        phases = ("warmup",)
    print(f"Compiling the step functions of {len(setup.runs)} run(s) on {len(layout.mesh.devices)} device(s) "
          f"({', '.join(phases)}, evaluation)...", flush=True)
    t_compile = time.time()
    try:
        out = wait_interruptibly(lambda: _init_and_compile(fns, layout, setup.runs, setup.hyper, host,
                                                           rc.eval_episodes, phases), stop)
    except Interrupted as error:
        raise interrupted_while_compiling(error, ckpt) from None
    print(f"Compiled in {time.time() - t_compile:.1f} s.", flush=True)
    return out


def interrupted_while_compiling(error: Interrupted, ckpt: Checkpointer) -> Interrupted:
    """The ``Interrupted`` of a signal before the first step: closes ``ckpt`` and names the
    checkpoint ``--resume`` continues from."""
    last_good = ckpt.latest_step()
    ckpt.close()
    then = (f"--resume continues from checkpoint step {last_good}" if last_good is not None
            else "no checkpoint yet: --resume starts from step 0")
    return Interrupted(f"{error}: stopped before the first step, nothing to save; {then}")
