"""Compare agents: a grid of algorithms x tasks x seeds, one ``run.py`` process per (algorithm,
task) with its seeds (and any sweep) vmapped inside, one after another; then the tables and
figures of ``experiments/plot.py``.

    python experiments/compare.py --out runs/compare --tasks cartpole-swingup,pendulum-swingup --seeds 3 \\
        --algo "rfm=rfm:cpu" --algo "rfm-diffusion=rfm_diffusion:cpu" --algo "sac=sac:cpu"
    python experiments/compare.py --out runs/compare ... --no_train      # only rebuild the table and figures

``--algo NAME=CONFIG:PRESET [run.py flags]``: CONFIG is ``experiments/configs/CONFIG.py``, PRESET one of
its presets (``cpu``, ``smoke``, or ``reference``); the flags go to every run of that algorithm.
A finished (algorithm, task) is skipped, an unfinished one resumed, so re-running continues.
Every run uses the same ``--total_steps`` (env steps per env) when given.

Writes <out>/<name>/<task>/ (run.py workdirs: metrics JSONL, checkpoints, summary) and, through
``experiments/plot.py``, <out>/results.md and results.csv (per algorithm and task: seeds, final and
best eval return with an interval that says what it is: a 95 % bootstrap CI with 5 or more seeds,
the seeds' min-max with fewer; wall time), curves_<task>.png/.pdf, and rliable's IQM / mean with
stratified-bootstrap intervals and performance profiles across tasks (aggregate.*, profile.*).
"final" is the last evaluation's mean return of each run; "best" each run's maximum.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import plot  # noqa: E402  (experiments/plot.py: the table and figures)


def parse_algo(spec: str) -> tuple[str, str, str, list[str]]:
    """"NAME=CONFIG:PRESET [flags]" -> (name, config, preset, flags); a one-line error otherwise."""
    name, sep, rest = spec.partition("=")
    tokens = rest.split()
    if not sep or not name or not tokens or ":" not in tokens[0]:
        raise SystemExit(f"compare.py: --algo {spec!r}: expected NAME=CONFIG:PRESET [run.py flags]")
    config, _, preset = tokens[0].partition(":")
    if not os.path.exists(os.path.join(HERE, "configs", f"{config}.py")):
        raise SystemExit(f"compare.py: --algo {spec!r}: no experiments/configs/{config}.py")
    return name, config, preset, tokens[1:]


def task_dir(task: str) -> str:
    """The directory of a task's runs: ``gym:Hopper-v5`` -> ``gym_Hopper-v5``."""
    return task.replace(":", "_")


def train_one(out, name, config, preset, flags, task, seeds, total_steps):
    """Run (or resume, or skip when finished) one algorithm on one task."""
    workdir = os.path.join(out, name, task_dir(task))
    if os.path.exists(os.path.join(workdir, "summary.json")):
        print(f"[{name} / {task}] finished before: skipped", flush=True)
        return
    cmd = [sys.executable, os.path.join(HERE, "run.py"), f"--config={os.path.join(HERE, 'configs', config)}.py:"
           f"{preset},{task}", f"--config.num_seeds={seeds}", f"--workdir={workdir}", *flags]
    if total_steps:
        cmd.append(f"--config.total_steps={total_steps}")
    checkpoints = os.path.join(workdir, "checkpoints")
    if os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)):  # killed after one
        cmd.append("--resume")
    print(f"[{name} / {task}] {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"compare.py: {name} on {task} failed (exit {proc.returncode}); re-run to resume it")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--algo", action="append", required=True, help="NAME=CONFIG:PRESET [run.py flags]")
    parser.add_argument("--tasks", default="cartpole-swingup", help="comma-separated tasks (DMC, gym:<id>)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per algorithm and task (vmapped)")
    parser.add_argument("--total_steps", type=int, default=None, help="env steps per run for every algorithm")
    parser.add_argument("--no_train", action="store_true", help="only build the table and figures")
    parser.add_argument("--max_return", type=float, default=1000.0, help="normaliser of the aggregates (DMC: 1000)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    algos = [parse_algo(spec) for spec in args.algo]
    names = [a[0] for a in algos]
    if len(set(names)) != len(names):
        parser.error(f"--algo: names must differ, got {names}")
    tasks = [t for t in args.tasks.split(",") if t]
    os.makedirs(args.out, exist_ok=True)
    if not args.no_train:
        for name, config, preset, flags in algos:
            for task in tasks:
                train_one(args.out, name, config, preset, flags, task, args.seeds, args.total_steps)
    workdirs = [os.path.join(args.out, n, task_dir(t)) for n in names for t in tasks
                if os.path.exists(os.path.join(args.out, n, task_dir(t), "setup.json"))]
    if not workdirs:
        raise SystemExit(f"compare.py: no runs under {args.out}")
    plot.make_all(workdirs, args.out, args.max_return)


if __name__ == "__main__":
    main()
