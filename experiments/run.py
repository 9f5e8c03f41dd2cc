"""Train any registered agent (``experiments/configs/<algo>.py``) on DeepMind Control, many seeds
and swept hyperparameter values in one program.

    python experiments/run.py --config=experiments/configs/rfm.py:cheetah-run --config.num_seeds=5 --workdir=runs/demo
    python experiments/run.py --config=experiments/configs/rfm.py:cpu --workdir=runs/cpu      # 2-core CPU preset
    python experiments/run.py --config=experiments/configs/sac.py:cpu --workdir=runs/sac      # another agent
    python experiments/run.py --config=experiments/configs/rfm.py:cpu --config.num_seeds=2 \
        --config.sweep.temperature=0.01,0.02,0.05 --workdir=runs/sweep                       # 6 runs, one program
    python experiments/run.py --config=... --workdir=runs/demo --resume                      # continue a killed run
    python experiments/run.py --config=experiments/configs/rfm.py:cheetah-run --dry_run        # check, build, count
    python experiments/run.py --config=... --config.num_seeds=8 --workdir=runs/multi \
        --coordinator=host0:1234 --num_processes=2 --process_id=0                          # runs over 2 processes

Writes <workdir>/config.json, provenance.json (versions, devices, git commit and command of every
session), metrics/{train,eval}_<run>.jsonl and tb/<run>/ (TensorBoard; run names
seed{s} or seed{s}_<field><value> in a sweep, with HParams) and checkpoints/ (orbax: params,
optimiser states, replay buffers, PRNG keys, counters, env states).  Ctrl-C or SIGTERM saves a
checkpoint and exits; --resume continues exactly where it stopped.  The runs are sharded over
every device (``rfm_jax.infra.distributed``); with several processes each one writes its own runs'
metrics and checkpoint parts, and process 0 the run's files (config, provenance, summary).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # configs/, also when this file is loaded by path
from configs.common import sweep_values  # noqa: E402

from rfm_jax.infra.runtime import configure_xla_cpu  # noqa: E402

configure_xla_cpu()  # before jax starts its backend

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/configs/rfm.py:cheetah-run.")
flags.DEFINE_string("workdir", None, "Output directory (not needed with --dry_run).")
flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its last checkpoint.")
flags.DEFINE_integer("stop_after", None, "End this session (with a checkpoint) at this env step (absolute).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("dry_run", False, "Validate the config, build the agent, print parameter counts and the update's "
                  "GMAC, and exit before training.")
flags.DEFINE_string("coordinator", None, "Multi-process runs: HOST:PORT of process 0 (jax.distributed); with "
                    "--num_processes and --process_id.")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes train together.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0 .. num_processes - 1.")
flags.DEFINE_bool("distributed", False, "Multi-process runs on a cluster: let jax.distributed read the process "
                  "layout from the environment (SLURM, Open MPI, ...).")
flags.DEFINE_integer("num_devices", None, "Use only the first N local devices (one process); default: all.")
flags.DEFINE_bool("debug", False, "Show Python tracebacks for user errors (bad config, workdir, disk full) too.")
flags.mark_flags_as_required(["config"])


class UserError(app.UsageError):
    """Something the user can fix (a config field, the workdir, disk space): printed as one line
    ``run.py: ...`` with exit status 2 (no traceback unless --debug)."""

# Fields that may differ between a run and its resume (they change no array's shape): e.g. lower
# learning rates to continue from the last good checkpoint of a run that diverged.
RESUMABLE_CHANGES = ("total_steps", "video", "agent.actor_lr", "agent.critic_lr", "agent.alpha_lr",
                     "agent.grad_clip", "hyper.clip")


def _positive(errors, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        errors.append(f"config.{name} must be an integer >= {minimum}, got {value!r}")


def validate(config) -> list[str]:
    """Every problem of the run fields of ``config``, named by field, before anything is built.
    The agent's own fields are checked by its factory and ``check_hyper`` (``setup``)."""
    from rfm_jax.agents import REGISTRY
    from rfm_jax.envs import TASKS
    from rfm_jax.training.loop import EVAL_MODES

    errors = []
    if config.get("algo") not in REGISTRY:
        errors.append(f"config.algo must be one of {sorted(REGISTRY)}, got {config.get('algo')!r}")
    if config.task not in TASKS:
        close = difflib.get_close_matches(str(config.task), TASKS, n=3)
        errors.append(f"config.task {config.task!r} is not a DMC task"
                      + (f"; did you mean {' or '.join(close)}?" if close else "")
                      + f" Valid names: {', '.join(TASKS)}")
    for name in ("num_seeds", "num_envs", "total_steps", "batch_size", "replay_capacity", "updates_per_step",
                 "eval_every", "eval_episodes", "log_every", "checkpoint_every"):
        _positive(errors, name, config[name])
    _positive(errors, "seed", config.seed, 0)
    _positive(errors, "warmup_steps", config.warmup_steps, 1)  # the first update needs a stored transition
    if isinstance(config.warmup_steps, int) and isinstance(config.total_steps, int):
        if config.warmup_steps > config.total_steps:
            errors.append(f"config.warmup_steps ({config.warmup_steps}) exceeds config.total_steps "
                          f"({config.total_steps}): the run would never update")
    if config.eval_mode not in EVAL_MODES:
        errors.append(f"config.eval_mode must be one of {EVAL_MODES}, got {config.eval_mode!r}")
    if isinstance(config.batch_size, int) and isinstance(config.replay_capacity, int):
        if config.batch_size > config.replay_capacity:
            errors.append(f"config.batch_size ({config.batch_size}) exceeds config.replay_capacity "
                          f"({config.replay_capacity})")
        if config.num_envs > config.replay_capacity:
            errors.append(f"config.num_envs ({config.num_envs}) exceeds config.replay_capacity")
    try:
        sweep_values(config)
    except ValueError as e:
        errors.append(str(e))
    return errors


def agent_kwargs(config) -> dict:
    """The factory's keyword arguments, by ``configs/<algo>.py``'s ``agent_kwargs``."""
    return importlib.import_module(f"configs.{config.algo}").agent_kwargs(config)


def setup(config):
    """(agent, per-run hyper, runs) of ``config``: the factory's and ``check_hyper``'s checks as
    one-line usage errors."""
    from rfm_jax.training.loop import build

    seeds = [config.seed + i for i in range(config.num_seeds)]
    try:
        return build(config.task, config.algo, agent_kwargs(config), dict(config.hyper), seeds, sweep_values(config))
    except ValueError as e:
        raise UserError(f"Invalid config: {_config_field(config, str(e))}{e}") from None


def _config_field(config, message: str) -> str:
    """``config.agent.<arg>: `` or ``config.hyper.<field>: `` for the field a factory's message names."""
    match = re.search(r"`(hyper\.)?(\w+)`", message)
    if match is None:
        return ""
    group = "hyper" if match.group(1) else ("agent" if match.group(2) in config.agent else None)
    return f"config.{group}.{match.group(2)}: " if group else ""


def _latest_checkpoint(workdir: str) -> int | None:
    """Step of the newest complete checkpoint in ``workdir`` (orbax writes each one atomically)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return None
    steps = [int(d) for d in os.listdir(directory)
             if d.isdigit() and os.path.exists(os.path.join(directory, d, "_CHECKPOINT_METADATA"))]
    return max(steps, default=None)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_resume(workdir: str, config) -> None:
    """Refuse a resume whose config differs from the run's (naming every differing field, nested
    ones as agent.actor_lr) or whose total_steps lies before the newest checkpoint."""
    with open(os.path.join(workdir, "config.json")) as f:
        saved = _flat(json.load(f))
    current = _flat(json.loads(config.to_json()))
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)
               and k not in RESUMABLE_CHANGES]
    if changed:
        raise UserError(f"--resume: config fields differ from {workdir}/config.json: "
                             + ", ".join(f"{k} ({saved.get(k)!r} -> {current.get(k)!r})" for k in changed)
                             + f"; only these may change on resume: {', '.join(RESUMABLE_CHANGES)}")
    for k in RESUMABLE_CHANGES:
        if k in saved and saved.get(k) != current.get(k):
            print(f"--resume: {k} changes from {saved[k]!r} to {current[k]!r} (allowed on resume).", flush=True)
    latest = _latest_checkpoint(workdir)
    if latest is not None and config.total_steps < latest:
        raise UserError(f"--resume: config.total_steps ({config.total_steps}) is below the newest "
                        f"checkpoint's step ({latest}) in {workdir}")
    _check_process_count(workdir, latest)


def _check_process_count(workdir: str, step: int | None) -> None:
    """Refuse, before compiling, to resume a checkpoint written by another number of processes
    (``Checkpointer.restore`` checks it again; an unreadable metadata file is left to it)."""
    import jax

    try:
        with open(os.path.join(workdir, "checkpoints", str(step), "meta", "metadata")) as f:
            saved = int(json.load(f).get("num_processes", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return
    if saved != jax.process_count():
        raise UserError(f"--resume: checkpoint {workdir}/checkpoints/{step} was written by {saved} process(es); "
                        f"this run has {jax.process_count()}: resume with --num_processes={saved}")


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


def dry_run(config) -> None:
    """Build the agent of ``config``, print its networks' parameter counts (and the update's GMAC
    where ``rfm_jax.infra.macs`` counts that agent), and exit."""
    import jax

    from rfm_jax import envs
    from rfm_jax.infra.macs import COSTS
    from rfm_jax.networks import param_count

    agent, hyper, runs = setup(config)
    spec = envs.spec(config.task)
    state = jax.eval_shape(agent.init, jax.random.PRNGKey(config.seed), jax.tree.map(lambda x: x[0], hyper))
    counts = {"actor": param_count(state.actor_params), "critics": param_count(state.critic_params)}
    print(f"{config.algo} on {config.task}: obs {spec.obs_dim}, action {spec.action_dim}, {len(runs)} run(s), "
          f"backend {jax.default_backend()}")
    print(f"parameters: actor {counts['actor']:,}, critics {counts['critics']:,} "
          f"({config.agent.num_critics} x {counts['critics'] // config.agent.num_critics:,})")
    out = {"algo": config.algo, "task": config.task, "runs": [r.name for r in runs], "params": counts}
    if config.algo in COSTS:
        macs = COSTS[config.algo](obs_dim=spec.obs_dim, action_dim=spec.action_dim, batch_size=config.batch_size,
                                  **agent_kwargs(config))
        print(f"update: {macs['total'] / 1e9:.2f} GMAC ("
              + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in macs.items() if k not in ("total", "act"))
              + f"); one training action: {macs['act'] / 1e9:.4f} GMAC")
        out["gmac"] = {k: v / 1e9 for k, v in macs.items()}
    print(json.dumps(out))


PROVENANCE = "provenance.json"  # in the workdir: one entry per session (the first run and each --resume)


def record_provenance(workdir: str, resume: bool) -> None:
    """Append this session's ``rfm_jax.infra.runtime.provenance()`` (versions, devices, git commit, command)
    with its start time to ``<workdir>/provenance.json``."""
    from rfm_jax.infra.runtime import provenance

    path = os.path.join(workdir, PROVENANCE)
    sessions = []
    if os.path.exists(path):
        with open(path) as f:
            sessions = json.load(f)
    sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume": resume, **provenance()})
    with open(path, "w") as f:
        json.dump(sessions, f, indent=2)


def main(argv):
    """``_main`` with user errors, a disk filling up and a signal during compilation reported in
    one line (``--debug`` re-raises them with their traceback)."""
    from rfm_jax.infra.checkpoints import DiskFullError, NoUsableCheckpoint, ProcessCountMismatch
    from rfm_jax.infra.guards import Interrupted, NonFiniteError, is_disk_full

    try:
        _main(argv)
    except (UserError, NonFiniteError, Interrupted, NoUsableCheckpoint, ProcessCountMismatch, OSError) as error:
        if FLAGS.debug or (isinstance(error, OSError) and not is_disk_full(error)):
            raise
        code = {UserError: 2, ProcessCountMismatch: 2, Interrupted: 0}.get(type(error), 1)
        message = str(error)
        if isinstance(error, OSError):  # ENOSPC: a checkpoint (DiskFullError) or a metrics file
            message = error.strerror if isinstance(error, DiskFullError) else (
                f"no space left on the device ({message.splitlines()[0][:200]}); the last checkpoint is intact; "
                "free some space, then --resume")
        print(f"run.py: {message}", file=sys.stderr, flush=True)
        # XLA's compiler thread, or orbax's and tensorstore's I/O threads after a failed save or
        # restore, may still be running (and print their own tracebacks at shutdown): exit now.
        sys.stdout.flush()
        os._exit(code)


def _main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    config, workdir = FLAGS.config, FLAGS.workdir
    errors = validate(config)
    if errors:
        raise UserError("invalid config: " + "; ".join(errors))
    if FLAGS.dry_run:
        dry_run(config)
        return
    join_processes()  # before anything starts JAX's backend
    _, _, runs = setup(config)  # the agent's checks, before anything is written
    if workdir is None:
        raise UserError("--workdir is required (except with --dry_run)")
    devices = run_devices(len(runs))
    lead = _is_lead()
    has_run = _latest_checkpoint(workdir) is not None
    resume = FLAGS.resume and has_run
    if FLAGS.resume and not has_run:  # e.g. killed before its first checkpoint completed
        print(f"--resume: no complete checkpoint in {workdir}; starting from step 0.", flush=True)
    if has_run and not FLAGS.resume:
        raise UserError(f"{workdir} already holds a run: pass --resume to continue it, or another --workdir")
    if resume:
        _check_resume(workdir, config)
    if lead:  # process 0 writes the run's own files; every process writes its runs' metrics
        try:
            os.makedirs(workdir, exist_ok=True)
            _write_atomically(os.path.join(workdir, "config.json"), config.to_json(indent=2))
        except OSError as error:
            raise UserError(f"--workdir={workdir}: cannot write there ({error.strerror or error})") from None
        record_provenance(workdir, resume)

    from rfm_jax.training.loop import train

    seeds = [config.seed + i for i in range(config.num_seeds)]
    start = _latest_checkpoint(workdir) if resume else 0
    progress = Progress(start, config.total_steps) if FLAGS.progress and lead else None
    sweep = sweep_values(config)
    print(f"Training {config.algo} on {config.task} with seeds {seeds}"
          + (f" x sweep {sweep}" if sweep else "") + f" into {workdir}", flush=True)
    try:
        summary = _train(train, config, workdir, seeds, sweep, progress, resume, devices)
    finally:
        if progress is not None:
            progress.close()
    summary["provenance"] = PROVENANCE
    if lead:
        _write_atomically(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2, allow_nan=False))
    print(json.dumps(summary), flush=True)


def _is_lead() -> bool:
    import jax

    return jax.process_index() == 0


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def join_processes() -> None:
    """Join the other processes of a multi-process run (``--coordinator`` or ``--distributed``)."""
    from rfm_jax.infra import distributed

    if not (FLAGS.coordinator or FLAGS.distributed):
        return
    if FLAGS.coordinator and (FLAGS.num_processes is None or FLAGS.process_id is None):
        raise UserError("--coordinator needs --num_processes and --process_id")
    if FLAGS.num_processes is not None and not 0 <= (FLAGS.process_id or 0) < FLAGS.num_processes:
        raise UserError(f"--process_id={FLAGS.process_id} must lie in 0 .. --num_processes - 1")
    if FLAGS.num_devices is not None:
        raise UserError("--num_devices applies to one process only; use CUDA_VISIBLE_DEVICES per process")
    try:
        distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    except Exception as error:  # noqa: BLE001 - e.g. no cluster found, coordinator unreachable
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"jax.distributed.initialize failed ({first[:300]}); check --coordinator, "
                        "--num_processes and --process_id, or the cluster's environment with --distributed") from None


def run_devices(num_runs: int):
    """The devices to shard the runs over (None: every device of every process); refuses a run
    count that they do not divide, before anything is compiled or written."""
    import jax

    from rfm_jax.infra import distributed

    devices = None
    if FLAGS.num_devices is not None:
        if not 1 <= FLAGS.num_devices <= jax.local_device_count():
            raise UserError(f"--num_devices={FLAGS.num_devices} must lie in 1 .. {jax.local_device_count()} "
                            "(this machine's devices)")
        devices = jax.local_devices()[:FLAGS.num_devices]
    try:
        distributed.Layout.make(num_runs, devices)
    except ValueError as error:
        raise UserError(str(error)) from None
    return devices


def _train(train, config, workdir, seeds, sweep, progress, resume, devices) -> dict:
    return train(
        task=config.task, seeds=seeds, workdir=workdir, algo=config.algo, agent_kwargs=agent_kwargs(config),
        hyper=dict(config.hyper), sweep=sweep,
        num_envs=config.num_envs, total_steps=config.total_steps, warmup_steps=config.warmup_steps,
        batch_size=config.batch_size, replay_capacity=config.replay_capacity, updates_per_step=config.updates_per_step,
        eval_every=config.eval_every, eval_episodes=config.eval_episodes, eval_mode=config.eval_mode,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every, resume=resume, stop_after=FLAGS.stop_after, progress=progress,
        video=config.video, devices=devices,
    ).summary


def _suggest(argv: list[str], flag: str) -> str:
    """"; did you mean ...?" for an unknown ``--config.a.b`` flag, from the fields next to it."""
    spec = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)
    if spec is None:
        return ""
    path, _, arg = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("_config_for_suggestion", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        node = module.get_config(arg or None)
        *parents, field = flag[len("--config."):].split(".")
        for parent in parents:
            node = node[parent]
        close = difflib.get_close_matches(field, list(node.keys()), n=3)
    except Exception:  # noqa: BLE001 - a suggestion is a courtesy; the error line stands without it
        return ""
    return f"; did you mean {' or '.join(close)}?" if close else f"; fields there: {', '.join(node.keys())}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line error (exit 2) for an override of a field the config
    does not have, e.g. ``--config.agent.foo=1`` or a sweep of a field the agent fixes."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError) as error:
        field = re.search(r"[A-Za-z_]\w*", str(error)).group()  # ml_collections quotes it, may add a hint
        flag = next((a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and
                     a.split("=")[0].rsplit(".", 1)[-1] == field), f"--config...{field}")
        print(f"run.py: {flag}: the config has no field `{field}`{_suggest(argv, flag)}", file=sys.stderr)
        sys.exit(2)
    except flags.Error as error:
        print(f"run.py: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
