"""Train any registered agent (``experiments/configs/<algo>.py``) on DeepMind Control, many seeds
and swept hyperparameter values in one program.

    python experiments/run.py --config=experiments/configs/rfm.py:cheetah-run --config.num_seeds=5 --workdir=runs/demo
    python experiments/run.py --config=experiments/configs/rfm.py:cpu --workdir=runs/cpu      # 2-core CPU preset
    python experiments/run.py --config=experiments/configs/sac.py:cpu --workdir=runs/sac      # another agent
    python experiments/run.py --config=experiments/configs/rfm.py:cpu --config.num_seeds=2 \
        --config.agent.temperature_mode=fixed --config.sweep.temperature=0.01,0.02,0.05 --workdir=runs/sweep  # 6 runs
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
This file parses the flags and reports errors; ``rfm_jax.training.run.run`` does the rest.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # configs/, also when this file is loaded by path
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


def main(argv):
    """``rfm_jax.training.run.run`` with user errors, a disk filling up and a signal during
    compilation reported in one line (``--debug`` re-raises them with their traceback); a failed
    env in one line and then its own traceback.  Exit status: 0 done or stopped by a signal, 1 a
    training failure (a non-finite value, a full disk, no usable checkpoint), 2 bad input (before
    anything is compiled), 3 the environment failed (it raised, returned an observation its space
    does not declare, or too many of its steps were invalid)."""
    from rfm_jax.infra.checkpoints import DiskFullError, NoUsableCheckpoint, ProcessCountMismatch
    from rfm_jax.infra.guards import EnvError, Interrupted, NonFiniteError, UserError, is_disk_full
    from rfm_jax.training.run import run

    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    try:
        run(FLAGS.config, FLAGS.workdir, FLAGS.resume, stop_after=FLAGS.stop_after, progress=FLAGS.progress,
            dry_run=FLAGS.dry_run, num_devices=FLAGS.num_devices, coordinator=FLAGS.coordinator,
            num_processes=FLAGS.num_processes, process_id=FLAGS.process_id, distributed=FLAGS.distributed)
    except (UserError, NonFiniteError, EnvError, Interrupted, NoUsableCheckpoint, ProcessCountMismatch,
            OSError) as error:
        if FLAGS.debug or (isinstance(error, OSError) and not is_disk_full(error)):
            raise
        code = {UserError: 2, ProcessCountMismatch: 2, Interrupted: 0, EnvError: 3}.get(type(error), 1)
        message = str(error)
        if isinstance(error, OSError):  # ENOSPC: a checkpoint (DiskFullError) or a metrics file
            message = error.strerror if isinstance(error, DiskFullError) else (
                f"no space left on the device ({message.splitlines()[0][:200]}); the last checkpoint is intact; "
                "free some space, then --resume")
        if isinstance(error, EnvError) and error.detail:  # then the env's own frames (--debug: all of them)
            message += "\n" + error.detail
        print(f"run.py: {message}", file=sys.stderr, flush=True)
        # XLA's compiler thread, or orbax's and tensorstore's I/O threads after a failed save or
        # restore, may still be running (and print their own tracebacks at shutdown): exit now.
        sys.stdout.flush()
        os._exit(code)


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
