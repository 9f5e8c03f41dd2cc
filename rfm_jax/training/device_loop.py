"""The on-device loop (``RunConfig.loop = "device"``): training, replay, the envs and evaluation of
R runs x E envs per run in compiled chunks, for ``mjx:`` tasks and any registered agent.

    for each chunk of L env steps (``device_program.chunk_length``):
        carry, ys = chunk(carry)           # one XLA call: L x (act, step E envs, add, update)
        host: rows, non-finite guard, invalid-step bound, evaluation, checkpoint, signals, progress

The host sees the state only at chunk boundaries; every step at which it acts (a row, an
evaluation, a checkpoint, the end, the step a resumed run starts from) is one.  Warm-up and
training steps share the chunk program (one ``lax.cond`` per step).  It reads each step's metrics and episode
counts off ``ys`` and writes the host loop's rows, averaged the same way.  A non-finite metric or
an env past the invalid-step bound stops the run naming the env step where it happened, without
saving; SIGINT / SIGTERM save at the next boundary.  Checkpoints hold the host loop's ``TrainState``
(so ``load_policy`` reads them) and one record per run with its envs and the carry, and resume
exactly.  Evaluation runs every run's ``eval_episodes`` greedy episodes in one program, with the
host loop's keys (``eval_mode``), so both loops evaluate a policy alike.
"""

from __future__ import annotations

import math
import os
import pickle
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax import envs
from rfm_jax.envs.base import INVALID_LIMIT, INVALID_WINDOW
from rfm_jax.infra.checkpoints import Checkpointer
from rfm_jax.infra.distributed import Layout
from rfm_jax.infra.guards import Interrupted, UserError, first_non_finite, stop_on_signal, wait_interruptibly
from rfm_jax.infra.metrics import MetricsWriter
from rfm_jax.training import device_program as dp
from rfm_jax.training import loop as loop_lib
from rfm_jax.training import session as session_lib
from rfm_jax.training import sweeps
from rfm_jax.training.evaluation import policy_keys
from rfm_jax.training.program import compile_seeds, make_step_fns
from rfm_jax.training.run_config import RunConfig


class Counts:
    """The host's per-run count of invalid steps (the rows' ``physics_errors``)."""

    def __init__(self, num_runs: int):
        self.physics_errors = np.zeros(num_runs, np.int64)


def _programs(fns, core, rc: RunConfig, layout: Layout, length: int, spec):
    """The jitted programs over the run axis: init, the warm-up and training chunks, evaluation."""
    on_runs = dict(in_shardings=layout.sharding, out_shardings=layout.sharding)

    def init(keys, hyper, env_keys):
        return dp.start(jax.vmap(fns.init)(keys, hyper), core, env_keys, spec.obs_dim, spec.action_dim)

    return {"init": jax.jit(init, **on_runs),
            "chunk": jax.jit(dp.make_chunk(fns, core, rc.warmup_steps, length), donate_argnums=0, **on_runs),
            "eval": jax.jit(dp.make_evaluate(fns, core), **on_runs)}


def _init_and_compile(programs, layout: Layout, setup, mine, rc: RunConfig):
    """(the fresh carry, the programs with the chunk and evaluation compiled ahead)."""
    from rfm_jax.envs.mjx_core import env_keys

    keys, hyper = layout.replicated_to_global((sweeps.run_keys(setup.runs), setup.hyper))
    carry = programs["init"](keys, hyper, layout.to_global(env_keys([r.seed for r in mine], rc.num_envs, 0)))
    compiled = dict(programs)
    compiled["chunk"] = programs["chunk"].lower(carry).compile()
    runs, sharding = layout.num_runs, layout.sharding
    horizon = setup.spec.episode_length
    compiled["eval"] = programs["eval"].lower(
        carry.train.agent, jax.ShapeDtypeStruct((runs, rc.eval_episodes, 2), jnp.uint32, sharding=sharding),
        jax.ShapeDtypeStruct((runs, horizon, 2), jnp.uint32, sharding=sharding)).compile()
    return carry, compiled


class DeviceSession(session_lib.Session):
    """A session of the on-device loop: the carry (train state, envs, pending transitions, the
    invalid-step rings) on the device; rows, evaluations and checkpoints at chunk boundaries."""

    def __init__(self, run_config, workdir, parts, runs, mine, host, carry, stop, meta, elapsed0, length: int):
        super().__init__(run_config, workdir, parts, runs, mine, host, carry.train, stop, meta, elapsed0)
        self.carry, self.length = carry, length

    def loop(self, start: int, end: int, progress=None) -> int:
        step, timer = start, [time.time(), start]
        if start == 0:
            self.evaluate(0)
        while step < end:
            self.carry, ys = self.fns["chunk"](self.carry)
            self.state = self.carry.train
            problem = self.absorb(self.layout.to_local(ys), step)
            stop, bad, failed = self.layout.any_of([bool(self.stop), problem[0] == "non-finite",
                                                    problem[0] == "env"])
            if bad:
                self.stop_non_finite(problem[1] if problem[0] == "non-finite"
                                     else f"non-finite values in another process's runs (see its log) after env "
                                          f"step {step}")
            if failed:
                self.stop_env_failure(problem[1] if problem[0] == "env" else None, problem[2] or step + self.length,
                                      "training")
            step += self.length
            self.after(step, end, stop, progress, timer)
            if stop:
                break
        return step

    def absorb(self, ys: dict, start: int) -> tuple:
        """Add a chunk's per-step values (numpy [R_local, L]) to the running sums; returns
        ("non-finite", what, step), ("env", EnvFailure, step) for the chunk's first problem, or
        (None, None, None)."""
        trained = max(self.rc.warmup_steps - start, 0)  # the chunk's first step with an update
        first_bad = _first_step({k: v[:, trained:] for k, v in ys["metrics"].items()}, lambda v: ~np.isfinite(v))
        first_bad = None if first_bad is None else first_bad + trained
        first_over = _first_step({"over": ys["over_bound"]}, lambda v: v >= 0)
        if first_bad is not None and (first_over is None or first_bad <= first_over):
            name, run, value = first_non_finite({k: v[:, first_bad] for k, v in ys["metrics"].items()})
            return ("non-finite", f"non-finite {name} = {value} in run {self.mine[run].name} at env step "
                    f"{start + first_bad + 1}", start + first_bad + 1)
        if first_over is not None:
            run = int(np.argmax(ys["over_bound"][:, first_over] >= 0))
            env = int(ys["over_bound"][run, first_over])
            failure = envs.EnvFailure(self.task, f"{INVALID_LIMIT + 1} of the env's last {INVALID_WINDOW} steps were "
                                      "invalid (a non-finite observation or reward, or diverged physics), more than "
                                      f"the bound of {INVALID_LIMIT}", run, env)
            return "env", failure, start + first_over + 1
        host, trained = self.host, slice(max(self.rc.warmup_steps - start, 0), None)  # warm-up steps have none
        for k, v in ys["metrics"].items():
            if v[:, trained].size:
                host.sums[k] = host.sums.get(k, 0.0) + np.asarray(v[:, trained], np.float64).sum(axis=1)
                self.counts[k] = self.counts.get(k, 0) + v[:, trained].shape[1]
        host.sums["episode_return_sum"] = host.sums.get("episode_return_sum", 0.0) + np.asarray(
            ys["return_sum"], np.float64).sum(axis=1)
        host.sums["episodes"] = host.sums.get("episodes", 0.0) + ys["episodes"].sum(axis=1)
        for r, row in enumerate(np.asarray(ys["finished_mean"], np.float64)):
            done = np.flatnonzero(~np.isnan(row))
            if done.size:
                host.train_returns[r] = row[done[-1]]
        self.env.physics_errors += ys["invalid"].sum(axis=1)
        return None, None, None

    def eval_returns(self, recorders) -> np.ndarray:
        from rfm_jax.envs.mjx_core import env_keys

        index = 0 if self.rc.eval_mode == "fixed" else self.num_evals
        seeds = [r.seed for r in self.mine]
        act_keys = policy_keys(seeds, index, envs.spec(self.task).episode_length)  # the host loop's
        keys = self.layout.to_global((env_keys(seeds, self.rc.eval_episodes, 1 + index), act_keys))
        return np.asarray(self.layout.to_local(self.fns["eval"](self.carry.train.agent, *keys)), np.float64)

    def records(self) -> list[bytes]:
        """Per run: the carry's env part (envs, observations, pending transitions, invalid-step
        rings) and the host's sums, compressed."""
        rest, host = self.layout.to_local(self.carry.replace(train=None)), self.host
        return [zlib.compress(pickle.dumps({
            "carry": jax.tree.map(lambda x, i=i: np.asarray(x[i]), rest), "physics_errors": self.env.physics_errors[i],
            "last_eval": host.last_eval[i], "train_return": host.train_returns[i],
            "sums": {k: v[i] for k, v in host.sums.items()}}), 1) for i in range(len(self.mine))]


def _first_step(values: dict, is_bad) -> int | None:
    """The first step index (axis 1 of [R, L] arrays) where ``is_bad`` holds for any run, or None."""
    steps = [int(np.argmax(bad.any(axis=0))) for bad in (is_bad(np.asarray(v)) for v in values.values())
             if bad.any()]
    return min(steps) if steps else None


def _restore(carry, records: list[bytes], layout: Layout):
    """(carry with the records' env part, host arrays, physics errors) of a checkpoint."""
    rows = [pickle.loads(zlib.decompress(r)) for r in records]
    rest = jax.tree.map(lambda *xs: np.stack(xs), *(row["carry"] for row in rows))
    rest = layout.to_global(rest)
    carry = carry.replace(envs=rest.envs, obs=rest.obs, pending=rest.pending, valid=rest.valid,
                          invalid_times=rest.invalid_times, invalid_ptr=rest.invalid_ptr)
    host = session_lib.Host(obs=None, valid=None, pending=None, last_eval=[r["last_eval"] for r in rows],
                            train_returns=np.asarray([r["train_return"] for r in rows], np.float64),
                            sums={k: np.asarray([r["sums"][k] for r in rows], np.float64) for k in rows[0]["sums"]})
    return carry, host, np.asarray([r["physics_errors"] for r in rows], np.int64)


def train(run_config: RunConfig, setup, *, workdir: str, resume: bool = False, stop_after: int | None = None,
          progress=None, devices=None, wandb_config: dict | None = None):
    """``rfm_jax.training.loop.train`` with ``run_config.loop == "device"`` (same arguments, same files)."""
    from rfm_jax.envs import mjx

    rc, runs = run_config, setup.runs
    layout = Layout.make(len(runs), devices)
    mine = [runs[i] for i in layout.local]
    spec = setup.spec
    step_kwargs = dict(num_envs=rc.num_envs, replay_capacity=rc.replay_capacity, batch_size=rc.batch_size,
                       updates_per_step=rc.updates_per_step)
    fns = make_step_fns(setup.agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, **step_kwargs)
    core, _ = mjx.program(envs.backend(rc.task)[1])
    with stop_on_signal() as stop:
        if jax.process_index() == 0:
            loop_lib._write_setup(workdir, rc, setup, step_kwargs)
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), layout)
        latest = ckpt.latest_step() if resume else None
        # A resumed run starts on a boundary, also when total_steps changed since its checkpoint.
        length = dp.chunk_length(rc.log_every, rc.eval_every, rc.checkpoint_every, rc.total_steps, latest or 0)
        end = rc.total_steps if stop_after is None else min(rc.total_steps, math.ceil(stop_after / length) * length)
        programs = _programs(fns, core, rc, layout, length, spec)
        sink = loop_lib._start_wandb(rc, workdir, mine, wandb_config, latest is not None, layout)
        print(f"Compiling the on-device loop of {len(runs)} run(s) x {rc.num_envs} env(s) on "
              f"{len(layout.mesh.devices)} device(s), chunks of {length} env steps (and evaluation)...", flush=True)
        t_compile = time.time()
        try:
            carry, compiled = wait_interruptibly(lambda: _init_and_compile(programs, layout, setup, mine, rc), stop)
        except Interrupted as error:
            raise loop_lib.interrupted_while_compiling(error, ckpt) from None
        print(f"Compiled in {time.time() - t_compile:.1f} s.", flush=True)
        host = session_lib.Host(obs=None, valid=None, pending=None, last_eval=[None] * len(mine),
                                train_returns=np.full(len(mine), np.nan), sums={})
        counts, start, elapsed0, meta = Counts(len(mine)), 0, 0.0, {}
        if latest is not None:
            latest, state, records, meta = ckpt.restore_latest_good(carry.train)
            loop_lib.check_same_loop(meta, rc, workdir, ckpt)
            carry, host, counts.physics_errors = _restore(carry.replace(train=state), records, layout)
            start, elapsed0 = int(meta["step"]), float(meta["wall_time"])
            if start % length:  # an older checkpoint than the newest (it was damaged), off the chunk grid
                ckpt.close()
                raise UserError(f"{workdir}: the usable checkpoint, step {start}, is not a multiple of the chunk "
                                f"length {length}; resume with config.loop='host', or a total_steps that {start} "
                                "divides")
            print(f"Resumed from {workdir} at env step {start}.", flush=True)
        writer = MetricsWriter(workdir, [r.name for r in mine], resume_step=start if latest is not None else -1,
                               wandb=sink)
        session = DeviceSession(rc, workdir, session_lib.Parts(compiled, layout, counts, ckpt, writer), runs, mine,
                                host, carry, stop, meta, elapsed0, length)
        step = session.loop(start, end, progress=progress)
        summary = session.finish(step, setup.algo, setup.sweep)
    return loop_lib.Trained(summary=summary, state=session.state, agent=setup.agent, runs=runs,
                            step_fns=compile_seeds(fns, layout.sharding))
