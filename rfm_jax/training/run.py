"""A whole run from a config (``experiments/configs/<algo>.py``): what ``experiments/run.py`` does
once its flags are parsed.

    summary = run(config, "runs/demo")                     # train; returns summary.json's contents
    summary = run(config, "runs/demo", resume=True)        # continue from the newest checkpoint
    report = run(config, None, dry_run=True)               # check, build, count parameters and GMAC

``run`` checks the config (``validate``, then the agent's factory and ``check_hyper`` in
``setup``), joins the other processes of a multi-process run, checks the device layout and the
resume (``rfm_jax.training.resume``), writes ``config.json`` and this session's provenance
(``rfm_jax.infra.provenance``), then trains (``rfm_jax.training.loop.train``) and writes
``summary.json``.  Every problem the user can fix raises ``UserError`` (one line naming the field,
file or flag) before anything is compiled or written.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

from rfm_jax.infra.guards import UserError
from rfm_jax.infra.provenance import PROVENANCE, record_session
from rfm_jax.training.resume import CONFIG_FILE, resume_step
from rfm_jax.training.run_config import RunConfig, RunConfigError
from rfm_jax.training.sweeps import sweep_values


def validate(config) -> list[str]:
    """Every problem of ``config``'s run fields (``RunConfig``), its algo and its sweep, named by
    field, before anything is built.  The agent's own fields are checked by its factory and
    ``check_hyper`` (``setup``)."""
    return _read(config)[0]


def checked(config) -> tuple[RunConfig, dict]:
    """(the run config, the sweep) of ``config``, each made once; every problem ``validate`` finds
    is one ``UserError``."""
    errors, run_config, sweep = _read(config)
    if errors:
        raise UserError("invalid config: " + "; ".join(errors))
    return run_config, sweep


def _read(config) -> tuple[list[str], RunConfig | None, dict | None]:
    """(problems, the run config, the sweep) of ``config`` (None where it has problems)."""
    from rfm_jax.agents import REGISTRY

    errors, run_config, sweep = [], None, None
    if config.get("algo") not in REGISTRY:
        errors.append(f"config.algo must be one of {sorted(REGISTRY)}, got {config.get('algo')!r}")
    try:
        run_config = RunConfig.from_config(config)
    except RunConfigError as error:
        errors += error.problems
    try:
        sweep = sweep_values(config)
    except ValueError as e:
        errors.append(str(e))
    return errors, run_config, sweep


def setup(config, run_config: RunConfig | None = None, sweep: dict | None = None):
    """The ``loop.Setup`` of ``config`` (built once): the factory's and ``check_hyper``'s checks as
    one-line ``UserError``s naming the config field."""
    from rfm_jax.agents import config_kwargs
    from rfm_jax.training.loop import build

    if run_config is None:
        run_config, sweep = checked(config)
    try:
        return build(run_config, config.algo, config_kwargs(config.agent), dict(config.hyper), sweep)
    except ValueError as e:
        raise UserError(f"Invalid config: {_config_field(config, str(e))}{e}") from None


def _config_field(config, message: str) -> str:
    """``config.agent.<arg>: `` or ``config.hyper.<field>: `` for the field a factory's message names."""
    match = re.search(r"`(hyper\.)?(\w+)`", message)
    if match is None:
        return ""
    group = "hyper" if match.group(1) else ("agent" if match.group(2) in config.agent else None)
    return f"config.{group}.{match.group(2)}: " if group else ""


def dry_run_report(config, built=None) -> dict:
    """Build the agent of ``config`` (or take ``built``, its ``loop.Setup``), print its networks'
    parameter counts (and the update's GMAC where ``rfm_jax.infra.macs`` counts that agent) and
    return them; nothing is trained or written."""
    import jax

    from rfm_jax.agents import config_kwargs
    from rfm_jax.infra.macs import COSTS
    from rfm_jax.networks import param_count

    built = built or setup(config)
    agent, spec = built.agent, built.spec
    state = jax.eval_shape(agent.init, jax.random.PRNGKey(config.seed), jax.tree.map(lambda x: x[0], built.hyper))
    counts = {"actor": param_count(state.actor_params), "critics": param_count(state.critic_params)}
    print(f"{config.algo} on {config.task}: obs {spec.obs_dim}, action {spec.action_dim}, {len(built.runs)} run(s), "
          f"backend {jax.default_backend()}")
    print(f"parameters: actor {counts['actor']:,}, critics {counts['critics']:,} "
          f"({config.agent.num_critics} x {counts['critics'] // config.agent.num_critics:,})")
    out = {"algo": config.algo, "task": config.task, "runs": [r.name for r in built.runs], "params": counts}
    if config.algo in COSTS:
        macs = COSTS[config.algo](obs_dim=spec.obs_dim, action_dim=spec.action_dim, batch_size=config.batch_size,
                                  **config_kwargs(config.agent))
        print(f"update: {macs['total'] / 1e9:.2f} GMAC ("
              + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in macs.items() if k not in ("total", "act"))
              + f"); one training action: {macs['act'] / 1e9:.4f} GMAC")
        out["gmac"] = {k: v / 1e9 for k, v in macs.items()}
    print(json.dumps(out))
    return out


class Progress:
    """tqdm bar: env steps per env, steps/s, the latest mean eval return over seeds."""

    def __init__(self, start: int, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
        self.last = 0.0

    def __call__(self, step, total, info):
        self.bar.update(step - self.bar.n)
        if time.time() - self.last > 1.0 or step == total:
            evals = [e for e in info["eval"] if e is not None and not math.isnan(e)]
            self.bar.set_postfix(eval=f"{sum(evals) / len(evals):.1f}" if evals else "-",
                                 phase="warmup" if info["warmup"] else "train", refresh=False)
            self.last = time.time()

    def close(self):
        self.bar.close()


def join_processes(coordinator=None, num_processes=None, process_id=None, distributed=False, num_devices=None):
    """Join the other processes of a multi-process run (``coordinator`` HOST:PORT with
    ``num_processes`` and ``process_id``, or ``distributed``: the layout from the cluster's
    environment); nothing to do for one process.  Must run before anything starts JAX's backend."""
    from rfm_jax.infra import distributed as distributed_lib

    if not (coordinator or distributed):
        return
    if coordinator and (num_processes is None or process_id is None):
        raise UserError("--coordinator needs --num_processes and --process_id")
    if num_processes is not None and not 0 <= (process_id or 0) < num_processes:
        raise UserError(f"--process_id={process_id} must lie in 0 .. --num_processes - 1")
    if num_devices is not None:
        raise UserError("--num_devices applies to one process only; use CUDA_VISIBLE_DEVICES per process")
    try:
        distributed_lib.initialize(coordinator, num_processes, process_id)
    except Exception as error:  # noqa: BLE001 - e.g. no cluster found, coordinator unreachable
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"jax.distributed.initialize failed ({first[:300]}); check --coordinator, "
                        "--num_processes and --process_id, or the cluster's environment with --distributed") from None


def run_devices(num_runs: int, num_devices: int | None = None):
    """The devices to shard the runs over (None: every device of every process; ``num_devices``:
    the first of this process's); refuses a run count that they do not divide, before anything is
    compiled or written."""
    import jax

    from rfm_jax.infra import distributed

    devices = None
    if num_devices is not None:
        if not 1 <= num_devices <= jax.local_device_count():
            raise UserError(f"--num_devices={num_devices} must lie in 1 .. {jax.local_device_count()} "
                            "(this machine's devices)")
        devices = jax.local_devices()[:num_devices]
    try:
        distributed.Layout.make(num_runs, devices)
    except ValueError as error:
        raise UserError(str(error)) from None
    return devices


def run(config, workdir: str | None, resume: bool = False, *, stop_after: int | None = None, progress: bool = True,
        dry_run: bool = False, num_devices: int | None = None, coordinator: str | None = None,
        num_processes: int | None = None, process_id: int | None = None, distributed: bool = False) -> dict:
    """Train ``config`` into ``workdir`` (``resume``: continue its run from the newest checkpoint;
    ``stop_after``: end this session with a checkpoint at that env step); returns the summary, or
    with ``dry_run`` the parameter and GMAC report.  See the module docstring."""
    import jax

    from rfm_jax.training.loop import train

    run_config, sweep = checked(config)
    if dry_run:
        return dry_run_report(config, setup(config, run_config, sweep))
    join_processes(coordinator, num_processes, process_id, distributed, num_devices)  # before JAX's backend
    built = setup(config, run_config, sweep)  # the agent's checks, before anything is written
    if workdir is None:
        raise UserError("--workdir is required (except with --dry_run)")
    devices = run_devices(len(built.runs), num_devices)
    lead = jax.process_index() == 0
    start = resume_step(workdir, config, resume)
    if lead:  # process 0 writes the run's own files; every process writes its runs' metrics
        _write_run_files(workdir, config, start is not None)
    bar = Progress(start or 0, run_config.total_steps) if progress and lead else None
    print(f"Training {config.algo} on {run_config.task} with seeds {run_config.seeds}"
          + (f" x sweep {sweep}" if sweep else "") + f" into {workdir}", flush=True)
    try:
        summary = train(run_config, built, workdir=workdir, resume=start is not None, stop_after=stop_after,
                        progress=bar, devices=devices, wandb_config=json.loads(config.to_json())).summary
    finally:
        if bar is not None:
            bar.close()
    summary["provenance"] = PROVENANCE
    if lead:
        _write_atomically(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2, allow_nan=False))
    print(json.dumps(summary), flush=True)
    return summary


def _write_run_files(workdir: str, config, resume: bool) -> None:
    """``config.json`` and this session's provenance; an unwritable workdir is a ``UserError``."""
    try:
        os.makedirs(workdir, exist_ok=True)
        _write_atomically(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2))
    except OSError as error:
        raise UserError(f"--workdir={workdir}: cannot write there ({error.strerror or error})") from None
    record_session(workdir, resume)


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
