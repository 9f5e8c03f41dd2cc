"""The host loop: R runs (seeds, or seeds x swept hyperparameter values, ``rfm_jax.sweeps``) x E
dm_control envs, one jitted run-vmapped call per env step, periodic evaluation (the agent's greedy
action), metrics, checkpoints and exact resume.  Any registered agent (``rfm_jax.agents``).

    for step in [start, total_steps):
        state, actions, metrics = step_fn(state, pending transitions, valid, obs)   # one XLA call
        step every env on the host -> pending transitions for the next call

SIGINT / SIGTERM finish the current step, save a checkpoint and return (a second signal aborts).

Non-finite guard: every step's metrics (losses, Q statistics, gradient norms, ...) of every run
are checked, and the whole train state before each checkpoint.  The first NaN or inf stops the
run with ``NonFiniteError`` naming the metric, the run and the env step; a non-finite state is
never checkpointed, so the newest checkpoint is always the last good one.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax import envs, replay, sweeps
from rfm_jax.agents import Agent, make_agent
from rfm_jax.checkpoints import Checkpointer
from rfm_jax.metrics import MetricsWriter
from rfm_jax.train import StepFns, TrainState, compile_seeds, empty_transitions, make_step_fns


def _nanmean(x) -> float:
    """Mean of the finite entries; NaN when there are none (no warning)."""
    x = np.asarray(x, np.float64)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else float("nan")


def _nan_to_none(x):
    return None if x is None or np.isnan(x) else float(x)


class NonFiniteError(RuntimeError):
    """A training metric (loss, Q statistic, gradient norm, ...) or the state about to be
    checkpointed is NaN or infinite; the run stops without saving it (module docstring)."""


def first_non_finite(metrics: dict) -> tuple[str, int, float] | None:
    """(name, run index, value) of the first non-finite entry of ``metrics`` {name: [R]}, or None."""
    for name in sorted(metrics):
        values = np.asarray(metrics[name], np.float64).reshape(-1)
        bad = ~np.isfinite(values)
        if bad.any():
            run = int(np.argmax(bad))
            return name, run, float(values[run])
    return None


@jax.jit
def runs_finite(state) -> jax.Array:
    """[R] bool: whether every floating leaf of run r's part of ``state`` (leading axis R) is finite."""
    flags = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in jax.tree.leaves(state)
             if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim >= 1]
    return jnp.all(jnp.stack(flags), axis=0)


EVAL_MODES = ("fixed", "fresh")
SETUP_FILE = "setup.json"  # in the workdir: task, agent name and arguments, hyper, seeds, sweep


def evaluate(fns: StepFns, agent_state, *, task: str, seeds, episodes: int, eval_index: int,
             mode: str = "fixed", recorders: list | None = None) -> np.ndarray:
    """Returns [R, episodes] of greedy episodes (NaN for an episode whose physics
    diverged).  ``mode="fixed"`` starts every evaluation from the same initial states and policy
    noise (the reference protocol); ``"fresh"`` draws new ones from ``eval_index``.  ``recorders``
    (one ``envs.Recorder`` per run) film each run's first episode."""
    if mode not in EVAL_MODES:
        raise ValueError(f"evaluate: `mode` must be one of {EVAL_MODES}, got {mode!r}.")
    eval_index = 0 if mode == "fixed" else eval_index
    env = envs.BatchedEnv(task, seeds, episodes, stream=1 + eval_index)
    length = envs.spec(task).episode_length
    obs = env.reset()
    keys = jax.vmap(lambda s: jax.random.split(jax.random.fold_in(jax.random.PRNGKey(s), 1 + eval_index), length))(
        jnp.asarray(seeds, jnp.uint32)
    )
    returns = np.full((len(seeds), episodes), np.nan)
    for i in range(length):
        for run, recorder in enumerate(recorders or ()):
            recorder.add(env.envs[run][0])
        result = env.step(np.asarray(fns.eval_act(agent_state, keys[:, i], jnp.asarray(obs))))
        first = result.done & np.isnan(returns)
        returns[first] = result.episode_return[first]
        obs = result.obs
    for recorder in recorders or ():
        recorder.close()
    return returns


@contextmanager
def _stop_on_signal():
    """Yield a flag list; the first SIGINT/SIGTERM sets it, a second one raises KeyboardInterrupt."""
    flag, previous = [], {}

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(signum)
        print(f"\nSignal {signum}: saving a checkpoint after this step (send again to abort).", flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: no handler
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Trained(NamedTuple):
    """What ``train`` returns: the summary (JSON-able), the final state (leading run axis R), the
    agent and the runs, so that a notebook can go on with the policy
    (``jax.vmap(agent.act, (0, 0, 0, None))(state.agent, keys, obs, True)``)."""

    summary: dict
    state: TrainState
    agent: Agent
    runs: list
    step_fns: Any


def build(task: str, algo: str, agent_kwargs: dict, hyper_values: dict | None, seeds, sweep: dict | None = None):
    """(agent, hyper, runs) of a training setup, every check done before anything compiles:
    the factory checks the static arguments, ``expand`` the swept names, ``check_hyper`` every
    value.  Raises a one-line ValueError naming the field."""
    spec = envs.spec(task)
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
) -> Trained:
    """Train agent ``algo`` (built from ``agent_kwargs``; ``hyper`` overrides its default
    hyperparameters) on ``task`` for every run of ``seeds`` x ``sweep`` ({field: [values]}), in one
    program.  Returns ``Trained`` (summary: last eval returns per run, run names, ...).

    ``stop_after`` ends the session (with a checkpoint) once env step ``stop_after`` is reached (an
    absolute step, as a kill would).  A run with no checkpoint in ``workdir`` starts from scratch
    and overwrites its metrics.  A signal during an evaluation is handled after the evaluation.
    ``progress(step, total, info)`` is called every step with a dict of display values (or None).
    ``video`` films each run's first evaluation episode at every evaluation to
    ``<workdir>/videos/<run>/step<N>.mp4`` (``envs.Recorder``; without a renderer one warning is
    logged and training goes on).
    """
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"train: `eval_mode` must be one of {EVAL_MODES}, got {eval_mode!r}.")
    hyper_values, seeds_in = dict(hyper or {}), [int(s) for s in seeds]
    agent, hyper, runs = build(task, algo, agent_kwargs, hyper_values, seeds_in, sweep)
    seeds = [r.seed for r in runs]  # one entry per run: runs of one seed see the same envs
    spec = envs.spec(task)
    step_kwargs = dict(num_envs=num_envs, replay_capacity=replay_capacity, batch_size=batch_size,
                       updates_per_step=updates_per_step)
    fns = compile_seeds(make_step_fns(agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, **step_kwargs))
    state = fns.init(sweeps.run_keys(runs), hyper)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, SETUP_FILE), "w") as f:  # what load_policy rebuilds the agent from
        json.dump({"task": task, "algo": algo, "agent_kwargs": agent_kwargs, "hyper": hyper_values, "seeds": seeds_in,
                   "sweep": sweep, "step_fns": step_kwargs, "runs": [r.name for r in runs]}, f, indent=2)
    env = envs.BatchedEnv(task, seeds, num_envs)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    num_seeds = len(runs)
    video_switch = {"on": bool(video)}  # shared by the recorders: off after the first failure
    start, elapsed0, meta = 0, 0.0, {}
    latest = ckpt.latest_step() if resume else None
    if latest is not None:
        latest, state, host, meta = ckpt.restore_latest_good(state)
        env.set_state(host["envs"].tobytes())
        obs, valid = host["obs"], host["valid"]
        pending = replay.Transition(*(host[f"pending_{f}"] for f in replay.Transition._fields))
        start, elapsed0 = int(meta["step"]), float(meta["wall_time"])
        print(f"Resumed from {workdir} at env step {start}.", flush=True)
    else:
        obs = env.reset()
        valid = np.zeros((num_seeds, num_envs), bool)
        pending = jax.tree.map(lambda x: np.zeros((num_seeds, *x.shape), x.dtype),
                               empty_transitions(num_envs, spec.obs_dim, spec.action_dim))
    writer = MetricsWriter(workdir, [r.name for r in runs], resume_step=start)  # drops rows of a run that died unsaved
    last_eval = meta.get("last_eval", [None] * num_seeds)
    train_returns = np.asarray(meta.get("train_returns", [np.nan] * num_seeds), np.float64)
    # Running sums of the metrics since the last row (checkpointed, so a resumed row is exact).
    sums = {k: np.asarray(v, np.float64) for k, v in meta.get("log_sums", {}).items()}
    counts = {k: int(v) for k, v in meta.get("log_counts", {}).items()}
    num_evals = int(meta.get("num_evals", 0))
    t0 = t_log = time.time()
    step_sps = start
    end = total_steps if stop_after is None else min(total_steps, stop_after)

    def stop_non_finite(what: str):
        writer.close()
        last_good = ckpt.latest_step()
        ckpt.close()
        kept = f"the last good checkpoint is step {last_good}" if last_good is not None else "no checkpoint was saved"
        raise NonFiniteError(f"{what}; nothing was saved ({kept}). Lower the learning rates or clip, then "
                             f"--resume from it, or start a new --workdir.")

    def save(step):
        finite = np.asarray(runs_finite(state))
        if not finite.all():
            stop_non_finite(f"non-finite parameters or optimiser state in run {runs[int(np.argmin(finite))].name} "
                            f"at env step {step}")
        host = {"envs": np.frombuffer(env.get_state(), np.uint8), "obs": obs, "valid": valid}
        host.update({f"pending_{f}": np.asarray(getattr(pending, f)) for f in replay.Transition._fields})
        ckpt.save(step, state, host, {"step": step, "wall_time": elapsed0 + time.time() - t0,
                                      "last_eval": last_eval, "train_returns": train_returns.tolist(),
                                      "log_sums": {k: v.tolist() for k, v in sums.items()}, "log_counts": counts,
                                      "num_evals": num_evals})

    def run_eval(step):
        nonlocal num_evals, last_eval
        recorders = None
        if video_switch["on"]:
            recorders = [envs.Recorder(os.path.join(workdir, "videos", r.name, f"step{step}.mp4"), video_switch)
                         for r in runs]
        returns = evaluate(fns, state.agent, task=task, seeds=seeds, episodes=eval_episodes, eval_index=num_evals,
                           mode=eval_mode, recorders=recorders)
        num_evals += 1
        last_eval = [_nanmean(r) for r in returns]
        writer.write("eval", step, elapsed0 + time.time() - t0,
                     [{"eval_return_mean": _nanmean(r), "eval_return_std": np.nanstd(r) if np.isfinite(r).any()
                       else np.nan, "eval_episodes": np.isfinite(r).sum()} for r in returns])

    step = start
    if start == 0:
        run_eval(0)  # the initial policy, as the reference protocol does
    with _stop_on_signal() as stop:
        while step < end:
            step_fn = fns.warmup_step if step < warmup_steps else fns.train_step
            state, actions, metrics = step_fn(state, pending, valid, jnp.asarray(obs))
            actions, metrics = jax.device_get((actions, metrics))  # one transfer per step
            bad = first_non_finite(metrics)
            if bad is not None:
                stop_non_finite(f"non-finite {bad[0]} = {bad[2]} in run {runs[bad[1]].name} at env step {step + 1}")
            result = env.step(actions)
            pending = replay.Transition(obs, actions, result.reward, result.discount, result.next_obs)
            valid, obs = result.valid, result.obs
            finished = ~np.all(np.isnan(result.episode_return), axis=1)
            train_returns[finished] = [_nanmean(r) for r in result.episode_return[finished]]
            for k, v in metrics.items():  # empty during warm-up
                sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64)
                counts[k] = counts.get(k, 0) + 1
            step += 1
            wall = elapsed0 + time.time() - t0
            if step % log_every == 0 or step == total_steps:
                sps = (step - step_sps) / max(time.time() - t_log, 1e-9)
                rows = [{**{k: v[s] / counts[k] for k, v in sums.items()}, "train_return": train_returns[s],
                         "physics_errors": env.physics_errors[s], "env_steps_per_s": sps} for s in range(num_seeds)]
                writer.write("train", step, wall, rows)
                sums, counts, t_log, step_sps = {}, {}, time.time(), step
            if step % eval_every == 0 or step == total_steps:
                run_eval(step)
            if step % checkpoint_every == 0 or step == end or stop:
                save(step)
            if progress is not None:
                progress(step, total_steps, {"eval": last_eval, "warmup": step < warmup_steps})
            if stop:
                break
    if sweep:
        writer.write_hparams([{"seed": r.seed, **r.values} for r in runs],
                             [{"hparam/last_eval_return": e if e is not None else np.nan} for e in last_eval])
    writer.close()
    ckpt.close()
    summary = {"algo": algo, "step": step, "runs": [r.name for r in runs],
               "last_eval": [None if e is None else _nan_to_none(e) for e in last_eval],
               "train_returns": [_nan_to_none(r) for r in train_returns],
               "physics_errors": env.physics_errors.tolist(), "wall_time": elapsed0 + time.time() - t0}
    return Trained(summary=summary, state=state, agent=agent, runs=runs, step_fns=fns)
