"""Compare agents: a grid of algorithms x tasks x seeds, one ``run.py`` process per (algorithm,
task) with its seeds (and any sweep) vmapped inside, one after another; then one table and one
learning-curve figure per task.

    python experiments/compare.py --out runs/compare --tasks cartpole-swingup,pendulum-swingup --seeds 3 \\
        --algo "rfm=rfm:cpu" --algo "rfm-diffusion=rfm:cpu --config.agent.policy=diffusion" --algo "sac=sac:cpu"
    python experiments/compare.py --out runs/compare ... --no_train      # only rebuild the table and figures

``--algo NAME=CONFIG:PRESET [run.py flags]``: CONFIG is ``experiments/configs/CONFIG.py``, PRESET one of
its presets (``cpu``, ``smoke``, or ``reference``); the flags go to every run of that algorithm.
A finished (algorithm, task) is skipped, an unfinished one resumed, so re-running continues.
Every run uses the same ``--total_steps`` (env steps per env) when given.

Writes <out>/<name>/<task>/ (run.py workdirs: metrics JSONL, checkpoints, summary),
<out>/results.md and results.csv (per algorithm and task: runs, final and best eval return as the
mean over runs with a 95 % stratified-bootstrap CI from rliable, wall time) and
<out>/curves_<task>.png (mean eval return over runs with a 95 % bootstrap band).  "final" is the
last evaluation's mean return of each run; "best" each run's maximum over its evaluations.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPS = 2000  # bootstrap resamples


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


def train_one(out, name, config, preset, flags, task, seeds, total_steps):
    """Run (or resume, or skip when finished) one algorithm on one task."""
    workdir = os.path.join(out, name, task)
    if os.path.exists(os.path.join(workdir, "summary.json")):
        print(f"[{name} / {task}] finished before: skipped", flush=True)
        return
    cmd = [sys.executable, os.path.join(HERE, "run.py"), f"--config={os.path.join(HERE, 'configs', config)}.py:"
           f"{preset},{task}", f"--config.num_seeds={seeds}", f"--workdir={workdir}", *flags]
    if total_steps:
        cmd.append(f"--config.total_steps={total_steps}")
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        cmd.append("--resume")
    print(f"[{name} / {task}] {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"compare.py: {name} on {task} failed (exit {proc.returncode}); re-run to resume it")


def load_runs(workdir: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(steps [T], eval returns [runs, T], wall time s) of one run.py workdir."""
    with open(os.path.join(workdir, "setup.json")) as f:
        names = json.load(f)["runs"]
    curves = []
    for run in names:
        with open(os.path.join(workdir, "metrics", f"eval_{run}.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        curves.append([(r["step"], np.nan if r["eval_return_mean"] is None else r["eval_return_mean"]) for r in rows])
    steps = np.array([s for s, _ in curves[0]])
    returns = np.array([[r for _, r in c] for c in curves], dtype=float)
    with open(os.path.join(workdir, "summary.json")) as f:
        wall = float(json.load(f)["wall_time"])
    return steps, returns, wall


def interval(scores: np.ndarray) -> tuple[float, float, float]:
    """Mean over runs and its 95 % stratified-bootstrap CI (rliable).  scores: [runs, tasks]."""
    from rliable import library as rly

    point, ci = rly.get_interval_estimates({"x": scores}, lambda x: np.array([np.mean(x)]), reps=REPS)
    return float(point["x"][0]), float(ci["x"][0, 0]), float(ci["x"][1, 0])


def table(out: str, names: list[str], tasks: list[str]) -> list[dict]:
    rows = []
    for name in names:
        finals, bests = [], []
        for task in tasks:
            workdir = os.path.join(out, name, task)
            if not os.path.exists(os.path.join(workdir, "summary.json")):
                continue
            steps, returns, wall = load_runs(workdir)
            final, best = returns[:, -1], np.nanmax(returns, axis=1)
            finals.append(final)
            bests.append(best)
            rows.append({"algo": name, "task": task, "runs": len(final), "env_steps": int(steps[-1]),
                         **_stats("final", final[:, None]), **_stats("best", best[:, None]),
                         "wall_time_min": wall / 60})
        if len(finals) > 1 and len({len(f) for f in finals}) == 1:
            rows.append({"algo": name, "task": "all tasks (stratified)", "runs": len(finals[0]),
                         "env_steps": rows[-1]["env_steps"], **_stats("final", np.stack(finals, 1)),
                         **_stats("best", np.stack(bests, 1)), "wall_time_min": float("nan")})
    return rows


def _stats(prefix, scores):
    mean, lo, hi = interval(scores)
    return {f"{prefix}_mean": mean, f"{prefix}_ci_low": lo, f"{prefix}_ci_high": hi}


def write_table(out: str, rows: list[dict], seeds_note: str) -> None:
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Eval return (greedy policy, the configs' evaluation protocol) at the last evaluation and the best "
             f"evaluation; mean over runs [95 % stratified-bootstrap CI, rliable, {REPS} resamples]; {seeds_note}.",
             "", "| algorithm | task | runs | env steps | final | best | wall time |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        wall = "" if np.isnan(r["wall_time_min"]) else f"{r['wall_time_min']:.1f} min"
        lines.append(f"| {r['algo']} | {r['task']} | {r['runs']} | {r['env_steps']:,} | "
                     f"{r['final_mean']:.0f} [{r['final_ci_low']:.0f}, {r['final_ci_high']:.0f}] | "
                     f"{r['best_mean']:.0f} [{r['best_ci_low']:.0f}, {r['best_ci_high']:.0f}] | {wall} |")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def plot(out: str, names: list[str], task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rng = np.random.default_rng(0)
    for name in names:
        workdir = os.path.join(out, name, task)
        if not os.path.exists(os.path.join(workdir, "summary.json")):
            continue
        steps, returns, _ = load_runs(workdir)
        idx = rng.integers(0, len(returns), (REPS, len(returns)))
        boot = np.nanmean(returns[idx], axis=1)  # [REPS, T]
        line = ax.plot(steps, np.nanmean(returns, 0), lw=2, label=f"{name} ({len(returns)} runs)")[0]
        ax.fill_between(steps, *np.percentile(boot, [2.5, 97.5], axis=0), color=line.get_color(), alpha=0.15)
    ax.set(xlabel="env steps (frames)", ylabel="eval return (greedy)", title=task, ylim=(0, 1000))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"curves_{task}.png"), dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--algo", action="append", required=True, help="NAME=CONFIG:PRESET [run.py flags]")
    parser.add_argument("--tasks", default="cartpole-swingup", help="comma-separated DMC tasks")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per algorithm and task (vmapped)")
    parser.add_argument("--total_steps", type=int, default=None, help="env steps per run for every algorithm")
    parser.add_argument("--no_train", action="store_true", help="only build the table and figures")
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
    rows = table(args.out, names, tasks)
    if not rows:
        raise SystemExit(f"compare.py: no finished runs under {args.out}")
    write_table(args.out, rows, f"{args.seeds} seeds per algorithm and task")
    for task in tasks:
        plot(args.out, names, task)


if __name__ == "__main__":
    main()
