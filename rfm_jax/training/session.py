"""One session of ``rfm_jax.training.loop.train``'s host loop: the train state, this process's envs and
host arrays, writers and counters between env steps, and the per-run checkpoint records that make
a resumed session continue exactly (``Host``, ``records``, ``from_records``).  Internal to the loop.

Per env step: one call of the compiled step on every run (global arrays), this process's runs'
actions and metrics back to the host, the non-finite check, the envs step, then the stop flag,
the non-finite check and an env failure (``envs.EnvFailure``) agreed over the processes.  Rows are
written every ``log_every`` steps, evaluations every ``eval_every`` and checkpoints every
``checkpoint_every`` (and at a signal or the end).  A non-finite value or a failed env stops the
run without saving (``NonFiniteError``, ``EnvError``), so the newest checkpoint is the last good one.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import Any, NamedTuple

import numpy as np

from rfm_jax import envs
from rfm_jax.infra.checkpoints import DiskFullError
from rfm_jax.infra.guards import EnvError, NonFiniteError, env_traceback, first_non_finite, runs_finite
from rfm_jax.training import replay
from rfm_jax.training.evaluation import evaluate


def _nanmean(x) -> float:
    """Mean of the finite entries; NaN when there are none (no warning)."""
    x = np.asarray(x, np.float64)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else float("nan")


EPISODE_SUMS = ("episode_return_sum", "episodes")  # per run, since the last train row: every finished episode once


def _nan_to_none(x):
    return None if x is None or np.isnan(x) else float(x)


class Host(NamedTuple):
    """This process's host side of the loop (rows: its runs): what a checkpoint record holds."""

    obs: np.ndarray  # [R_local, E, O]
    valid: np.ndarray  # [R_local, E]
    pending: replay.Transition  # [R_local, E, ...]: the transitions of the last env step
    last_eval: list  # [R_local] mean return of the latest evaluation (None before the first)
    train_returns: np.ndarray  # [R_local] return of the latest finished training episode
    sums: dict  # {metric: [R_local]} running sums since the last train row


def records(host: Host, env) -> list[bytes]:
    """One pickled record per run of this process: its envs, observations, pending transition,
    last evaluation, last training return and running sums (``Checkpointer.save``'s records).  An
    env that cannot be saved (``get_run_state`` None) is stored as None."""
    return [pickle.dumps({"env": env.get_run_state(i), "obs": host.obs[i], "valid": host.valid[i],
                          "pending": [np.asarray(x[i]) for x in host.pending], "last_eval": host.last_eval[i],
                          "train_return": host.train_returns[i], "sums": {k: v[i] for k, v in host.sums.items()}})
            for i in range(len(host.last_eval))]


def from_records(records: list[bytes], env) -> Host:
    """The inverse of ``records``: restores ``env`` (after its ``reset``) and returns the host arrays;
    a run whose env was not saved acts from its fresh episode's first observation."""
    rows = [pickle.loads(r) for r in records]
    restored = env.set_run_states([r["env"] for r in rows])
    obs = [r["obs"] if ok else env.obs[i] for i, (r, ok) in enumerate(zip(rows, restored, strict=True))]
    return Host(obs=np.stack(obs), valid=np.stack([r["valid"] for r in rows]),
                 pending=replay.Transition(*(np.stack([r["pending"][f] for r in rows])
                                             for f in range(len(replay.Transition._fields)))),
                 last_eval=[r["last_eval"] for r in rows],
                 train_returns=np.asarray([r["train_return"] for r in rows], np.float64),
                 sums={k: np.asarray([r["sums"][k] for r in rows], np.float64) for k in rows[0]["sums"]})


def env_error(failure: envs.EnvFailure, step: int | None, phase: str, last_good: int | None,
              run: str | None) -> EnvError:
    """The ``EnvError`` of ``failure`` in ``phase`` ("training", "evaluation", "first reset") at env
    ``step`` (None: none yet) of ``run`` (None: unknown), with the checkpoint ``--resume`` continues from."""
    where = [phase, *([f"env step {step}"] if step is not None else []),
             *([f"run {run}"] if run is not None else []), *([f"env {failure.env}"] if failure.env is not None else [])]
    then = (f"nothing was saved after checkpoint step {last_good}: --resume continues from it" if last_good is not None
            else "no checkpoint was saved: --resume starts from step 0")
    return EnvError(f"{failure} ({', '.join(where)}); {then} once the env is fixed", env_traceback(failure.__cause__))


class Parts(NamedTuple):
    """What a session drives: the compiled step functions, the device layout, this process's envs,
    the checkpointer and the metrics writer."""

    fns: Any
    layout: Any
    env: Any
    ckpt: Any
    writer: Any


class Session:
    """One session of ``train``'s host loop under ``run_config``: the train state, this process's
    envs, host arrays, writers and counters between env steps (private; everything it holds is
    checkpointed)."""

    def __init__(self, run_config, workdir: str, parts: Parts, runs, mine, host, state, stop, meta, elapsed0):
        self.rc, self.workdir = run_config, workdir
        self.fns, self.layout, self.env, self.ckpt, self.writer = parts
        self.runs, self.mine, self.host, self.state, self.stop = runs, mine, host, state, stop
        self.task = run_config.task
        self.counts = {k: int(v) for k, v in meta.get("log_counts", {}).items()}
        self.num_evals, self.elapsed0, self.t0 = int(meta.get("num_evals", 0)), elapsed0, time.time()
        self.video_switch = {"on": bool(run_config.video)}  # shared by the recorders: off after the first failure

    def wall(self) -> float:
        return self.elapsed0 + time.time() - self.t0

    def loop(self, start: int, end: int, progress=None) -> int:
        """Env steps ``start`` .. ``end`` (or until a signal); returns the step reached."""
        rc = self.rc
        step, timer = start, [time.time(), start]
        if start == 0:
            self.evaluate(0)  # the initial policy, as the reference protocol does
        while step < end:
            fn = self.fns.warmup_step if step < rc.warmup_steps else self.fns.train_step
            host = self.host
            self.state, actions, metrics = fn(self.state, *self.layout.to_global((host.pending, host.valid, host.obs)))
            actions, metrics = self.layout.to_local((actions, metrics))  # one transfer per step
            bad, failure = first_non_finite(metrics), None
            if bad is None:
                try:
                    self.env_step(actions, metrics)
                except envs.EnvFailure as error:
                    failure = error
            stop, bad_anywhere, failed_anywhere = self.layout.any_of(
                [bool(self.stop), bad is not None, failure is not None])
            if bad_anywhere:
                where = (f"non-finite {bad[0]} = {bad[2]} in run {self.mine[bad[1]].name}" if bad is not None
                         else "non-finite values in another process's runs (see its log)")
                self.stop_non_finite(f"{where} at env step {step + 1}")
            if failed_anywhere:
                self.stop_env_failure(failure, step + 1, "training")
            step += 1
            self.after(step, end, stop, progress, timer)
            if stop:
                break
        return step

    def after(self, step: int, end: int, stop: bool, progress, timer: list) -> None:
        """The host's work after env step ``step``: a row every ``log_every`` steps (``timer``:
        [time, step] of the last row), an evaluation every ``eval_every``, a checkpoint every
        ``checkpoint_every``, at ``end`` or after a signal, then the progress callback."""
        rc = self.rc
        if step % rc.log_every == 0 or step == rc.total_steps:
            self.log(step, (step - timer[1]) / max(time.time() - timer[0], 1e-9))
            timer[:] = [time.time(), step]
        if step % rc.eval_every == 0 or step == rc.total_steps:
            self.evaluate(step)
        if step % rc.checkpoint_every == 0 or step == end or stop:
            self.save(step)
        if progress is not None:
            progress(step, rc.total_steps, {"eval": self.host.last_eval, "warmup": step < rc.warmup_steps})

    def env_step(self, actions, metrics) -> None:
        host, result = self.host, self.env.step(actions)
        finished = ~np.all(np.isnan(result.episode_return), axis=1)
        host.train_returns[finished] = [_nanmean(r) for r in result.episode_return[finished]]
        ended = np.isfinite(result.episode_return)  # [R, E]: episodes that ended (not diverged) this step
        host.sums["episode_return_sum"] = host.sums.get("episode_return_sum", 0.0) + np.where(
            ended, result.episode_return, 0.0).sum(axis=1)
        host.sums["episodes"] = host.sums.get("episodes", 0.0) + ended.sum(axis=1)
        for k, v in metrics.items():  # empty during warm-up
            host.sums[k] = host.sums.get(k, 0.0) + np.asarray(v, np.float64)
            self.counts[k] = self.counts.get(k, 0) + 1
        self.host = host._replace(obs=result.obs, valid=result.valid, pending=replay.Transition(
            host.obs, actions, result.reward, result.discount, result.next_obs))

    def log(self, step: int, sps: float) -> None:
        host = self.host
        zeros = np.zeros(len(self.mine))
        episodes, returns = host.sums.get("episodes", zeros), host.sums.get("episode_return_sum", zeros)
        rows = [{**{k: v[r] / self.counts[k] for k, v in host.sums.items() if k not in EPISODE_SUMS},
                 "train_return": host.train_returns[r], "physics_errors": self.env.physics_errors[r],
                 "env_steps_per_s": sps, "train_episodes": episodes[r],
                 "train_return_mean": returns[r] / episodes[r] if episodes[r] else np.nan}
                for r in range(len(self.mine))]
        self.writer.write("train", step, self.wall(), rows)
        host.sums.clear()
        self.counts = {}

    def evaluate(self, step: int) -> None:
        recorders = None
        if self.video_switch["on"]:
            recorders = [envs.Recorder(os.path.join(self.workdir, "videos", r.name, f"step{step}.mp4"),
                                       self.video_switch) for r in self.mine]
        try:
            returns = self.eval_returns(recorders)
        except envs.EnvFailure as failure:
            self.stop_env_failure(failure, step, "evaluation")
        self.num_evals += 1
        self.host = self.host._replace(last_eval=[_nanmean(r) for r in returns])
        self.writer.write("eval", step, self.wall(),
                          [{"eval_return_mean": _nanmean(r), "eval_return_std": np.nanstd(r) if np.isfinite(r).any()
                            else np.nan, "eval_episodes": np.isfinite(r).sum()} for r in returns])

    def eval_returns(self, recorders) -> np.ndarray:
        """[R_local, eval_episodes] returns of this evaluation's greedy episodes."""
        return evaluate(self.fns, self.state.agent, task=self.task, seeds=[r.seed for r in self.mine],
                        episodes=self.rc.eval_episodes, eval_index=self.num_evals, mode=self.rc.eval_mode,
                        recorders=recorders, layout=self.layout, env_kwargs=self.rc.env_kwargs)

    def records(self) -> list[bytes]:
        """This process's checkpoint records, one per run."""
        return records(self.host, self.env)

    def close_for_failure(self) -> int | None:
        """Close the writers and the checkpointer without saving; returns the last good checkpoint."""
        self.writer.close()
        last_good = self.ckpt.latest_step()
        self.ckpt.close()
        return last_good

    def stop_non_finite(self, what: str):
        last_good = self.close_for_failure()
        kept = (f"the last good checkpoint is step {last_good}" if last_good is not None
                else "no checkpoint was saved")
        raise NonFiniteError(f"{what}; nothing was saved ({kept}). Lower the learning rates or clip, then "
                             f"--resume from it, or start a new --workdir.")

    def stop_env_failure(self, failure: envs.EnvFailure | None, step: int, phase: str):
        """Stop on a failed env (``failure``; None: another process's) with ``EnvError``: one line
        naming the task, the run, the env step and the checkpoint ``--resume`` continues from."""
        if failure is None:
            failure = envs.EnvFailure(self.task, "an env of another process failed (see its log)")
        raise env_error(failure, step, phase, self.close_for_failure(),
                        None if failure.run is None else self.mine[failure.run].name)

    def save(self, step: int) -> None:
        finite = self.layout.to_local(runs_finite(self.state))
        if self.layout.any_of([not finite.all()])[0]:
            where = (f"run {self.mine[int(np.argmin(finite))].name}" if not finite.all()
                     else "another process's runs")
            self.stop_non_finite(f"non-finite parameters or optimiser state in {where} at env step {step}")
        try:
            self.ckpt.save(step, self.state, self.records(),
                           {"step": step, "wall_time": self.wall(), "log_counts": self.counts,
                            "num_evals": self.num_evals, "loop": self.rc.loop})
        except DiskFullError:
            self.writer.close()
            raise

    def finish(self, step: int, algo: str, sweep) -> dict:
        """Close the writers; the summary of every run (gathered from every process)."""
        host, layout = self.host, self.layout
        if sweep:
            self.writer.write_hparams([{"seed": r.seed, **r.values} for r in self.mine],
                                      [{"hparam/last_eval_return": e if e is not None else np.nan}
                                       for e in host.last_eval])
        self.writer.close()
        self.ckpt.close()
        last_eval = layout.gather(np.asarray([np.nan if e is None else e for e in host.last_eval], np.float64))
        return {"algo": algo, "step": step, "runs": [r.name for r in self.runs],
                "last_eval": [_nan_to_none(e) for e in last_eval],
                "train_returns": [_nan_to_none(r) for r in layout.gather(host.train_returns)],
                "physics_errors": layout.gather(self.env.physics_errors).tolist(), "wall_time": self.wall()}
