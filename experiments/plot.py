"""Figures and tables from any number of ``run.py`` workdirs (single runs, sweeps, ``compare.py`` grids).

    python experiments/plot.py runs/compare --out runs/compare/plots            # every workdir below
    python experiments/plot.py runs/rfm_a runs/rfm_b runs/sac --out plots --max_return 1000

A workdir is a folder with ``setup.json``; folders are searched recursively.  Runs are grouped by
label and task: the label is the ``compare.py`` name when the workdir is ``<name>/<task>``, else the
agent (``setup.json``'s algo); a sweep's runs (``seed{s}_<field><value>``) get the value in their
label, so each sweep value is its own group.  Writes to ``--out``:

* ``curves_<task>.png/.pdf``: per group the mean eval return across seeds against env steps
  (frames), with a band: the 95 % percentile-bootstrap CI of the mean with 5 or more seeds, and the
  seeds' min-max range, labelled as such, with fewer (a bootstrap of 3 values is their range).
* ``aggregate.png/.pdf``: IQM and mean of the final return / ``--max_return`` across tasks with
  rliable's stratified-bootstrap intervals, and ``profile.png/.pdf``: rliable performance profiles
  (only groups with runs on every task; the number of runs per task is in the labels).
* ``results.md`` and ``results.csv``: per group and task the seeds, env steps, final and best eval
  return (mean and interval, named as above) and wall time; then the aggregates.

Metric files of runs still going or resumed are read as they are: a partial last line is skipped
and a repeated step keeps its last row.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rfm_jax.infra import metrics as metrics_lib  # noqa: E402

REPS = 2000  # bootstrap resamples
MIN_SEEDS_FOR_CI = 5  # fewer seeds: show the range and say so


def read_jsonl(path: str) -> list[dict]:
    """Rows of a metrics file, one per step (the last row of a repeated step), in step order; a line
    that does not parse (a run writing it right now) is skipped (``rfm_jax.infra.metrics.read_jsonl``)."""
    rows = {row["step"]: row for row in metrics_lib.read_jsonl(path)}
    return [rows[s] for s in sorted(rows)]


def find_workdirs(paths: list[str]) -> list[str]:
    """Every folder holding ``setup.json`` at or below ``paths``."""
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise SystemExit(f"plot.py: {path}: no such directory")
        found += sorted(root for root, _, files in os.walk(path) if "setup.json" in files)
    if not found:
        raise SystemExit(f"plot.py: no run.py workdir (a folder with setup.json) under {', '.join(paths)}")
    return found


def load_groups(workdirs: list[str]) -> dict:
    """{(label, task): {"steps": [T], "returns": [seeds, T], "wall_time": s}} over the runs of
    ``workdirs``; a group's runs are cut to the evaluations they all have."""
    runs = defaultdict(list)
    walls = defaultdict(float)
    for workdir in workdirs:
        with open(os.path.join(workdir, "setup.json")) as f:
            setup = json.load(f)
        base = os.path.normpath(workdir)
        dir_name = setup["task"].replace(":", "_")  # compare.py's <name>/<task> (gym:X -> gym_X)
        label = os.path.basename(os.path.dirname(base)) if os.path.basename(base) == dir_name else setup["algo"]
        for name in setup["runs"]:
            rows = [r for r in read_jsonl(os.path.join(workdir, "metrics", f"eval_{name}.jsonl"))
                    if r.get("eval_return_mean") is not None]
            if not rows:
                continue
            suffix = name.split("_", 1)[1] if "_" in name else ""
            key = (f"{label} {suffix}".strip(), setup["task"])
            runs[key].append({r["step"]: r["eval_return_mean"] for r in rows})
            walls[key] = max(walls[key], max(r["wall_time"] for r in rows))
    groups = {}
    for key, curves in runs.items():
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        groups[key] = {"steps": np.array(steps), "returns": np.array([[c[s] for s in steps] for c in curves]),
                       "wall_time": walls[key]}
    return groups


def interval(values: np.ndarray, seed: int = 0) -> tuple[float, float, float, str]:
    """(mean, low, high, what the interval is) of per-seed values [n]."""
    mean = float(np.mean(values))
    if len(values) < MIN_SEEDS_FOR_CI:
        return mean, float(np.min(values)), float(np.max(values)), f"min-max of {len(values)} seeds"
    boot = np.random.default_rng(seed).choice(values, (REPS, len(values))).mean(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return mean, float(low), float(high), f"95 % bootstrap CI, {len(values)} seeds"


def colors(groups: dict) -> dict:
    """One colour per label, the same in every figure."""
    labels = sorted({label for label, _ in groups})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def plot_curves(groups: dict, task: str, out: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    palette = colors(groups)
    for (label, group_task), g in sorted(groups.items()):
        if group_task != task:
            continue
        bands = np.array([interval(g["returns"][:, i])[1:3] for i in range(len(g["steps"]))])
        what = interval(g["returns"][:, 0])[3]
        ax.plot(g["steps"], g["returns"].mean(0), lw=2, color=palette[label], label=f"{label} (band: {what})")
        ax.fill_between(g["steps"], bands[:, 0], bands[:, 1], color=palette[label], alpha=0.15)
    unit = "env.step calls" if task.startswith("gym:") else "frames"
    ax.set(xlabel=f"env steps ({unit})", ylabel="eval return (greedy)", title=task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    _save(fig, out, f"curves_{task.replace(':', '_')}")


def _save(fig, out: str, name: str) -> None:
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(os.path.join(out, f"{name}.{ext}"), dpi=120)
    plt.close(fig)


def score_matrix(groups: dict, tasks: list[str], max_return: float) -> dict:
    """{label: [runs, tasks] final returns / max_return} for labels with runs on every task (cut to
    the smallest run count)."""
    labels = sorted({label for label, _ in groups})
    scores = {}
    for label in labels:
        finals = [groups[(label, t)]["returns"][:, -1] for t in tasks if (label, t) in groups]
        if len(finals) == len(tasks):
            n = min(len(f) for f in finals)
            scores[label] = np.stack([f[:n] for f in finals], axis=1) / max_return
    return scores


def aggregates(scores: dict, out: str) -> list[dict]:
    """IQM and mean with rliable's stratified-bootstrap intervals, their figure and the performance
    profiles; returns table rows."""
    from rliable import library as rly
    from rliable import metrics, plot_utils

    if not scores:
        return []
    funcs = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731
    points, cis = rly.get_interval_estimates(scores, funcs, reps=REPS)
    labels = list(scores)
    fig, _ = plot_utils.plot_interval_estimates(points, cis, metric_names=["IQM", "mean"], algorithms=labels,
                                                xlabel="final return / max return", subfigure_width=3.5,
                                                row_height=0.6, xlabel_y_coordinate=-0.1 - 0.5 / len(labels))
    _save(fig, out, "aggregate")
    taus = np.linspace(0.0, 1.0, 101)
    profiles, profile_cis = rly.create_performance_profile(scores, taus)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=profile_cis, ax=ax,
                                         xlabel=r"normalised final return $\tau$")
    names = [f"{label} ({scores[label].shape[0]} runs x {scores[label].shape[1]} tasks)" for label in labels]
    ax.legend(ax.get_lines()[:len(labels)], names, fontsize=7)
    _save(fig, out, "profile")
    rows = []
    for label in labels:
        runs, tasks = scores[label].shape
        what = ("95 % stratified-bootstrap CI" if runs >= MIN_SEEDS_FOR_CI else
                f"stratified-bootstrap interval of {runs} seeds (too few for a 95 % CI)")
        for i, metric in enumerate(("IQM", "mean")):
            rows.append({"group": label, "metric": metric, "runs": runs, "tasks": tasks, "value": points[label][i],
                         "low": cis[label][0, i], "high": cis[label][1, i], "interval": what})
    return rows


def write_tables(groups: dict, aggregate_rows: list[dict], out: str) -> list[dict]:
    rows = []
    for (label, task), g in sorted(groups.items()):
        final, best = g["returns"][:, -1], np.max(g["returns"], axis=1)
        f_mean, f_low, f_high, what = interval(final)
        b_mean, b_low, b_high, _ = interval(best)
        rows.append({"group": label, "task": task, "seeds": len(final), "env_steps": int(g["steps"][-1]),
                     "final_mean": f_mean, "final_low": f_low, "final_high": f_high, "best_mean": b_mean,
                     "best_low": b_low, "best_high": b_high, "interval": what,
                     "final_per_seed": " ".join(f"{v:.1f}" for v in final), "wall_time_min": g["wall_time"] / 60})
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["Eval return of the greedy policy at the last evaluation (final) and the best evaluation; mean over "
             "seeds [interval]: the interval column says what it is.", "",
             "| group | task | seeds | env steps | final | best | interval | final per seed | wall time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['task']} | {r['seeds']} | {r['env_steps']:,} | {r['final_mean']:.0f} "
                     f"[{r['final_low']:.0f}, {r['final_high']:.0f}] | {r['best_mean']:.0f} [{r['best_low']:.0f}, "
                     f"{r['best_high']:.0f}] | {r['interval']} | {r['final_per_seed']} | "
                     f"{r['wall_time_min']:.1f} min |")
    if aggregate_rows:
        lines += ["", "Across tasks (final return / max return, rliable):", "",
                  "| group | metric | runs x tasks | value | interval |", "|---|---|---|---|---|"]
        for r in aggregate_rows:
            lines.append(f"| {r['group']} | {r['metric']} | {r['runs']} x {r['tasks']} | {r['value']:.3f} | "
                         f"[{r['low']:.3f}, {r['high']:.3f}] {r['interval']} |")
        with open(os.path.join(out, "aggregate.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(aggregate_rows[0]))
            writer.writeheader()
            writer.writerows(aggregate_rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return rows


def make_all(paths: list[str], out: str, max_return: float = 1000.0) -> list[dict]:
    """Everything above for the workdirs at or below ``paths``; returns the per-task table rows."""
    groups = load_groups(find_workdirs(paths))
    if not groups:
        raise SystemExit("plot.py: the workdirs hold no evaluation yet")
    os.makedirs(out, exist_ok=True)
    tasks = sorted({task for _, task in groups})
    for task in tasks:
        plot_curves(groups, task, out)
    return write_tables(groups, aggregates(score_matrix(groups, tasks, max_return), out), out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run.py workdirs, or folders holding them")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--max_return", type=float, default=1000.0, help="normaliser of the aggregates (DMC: 1000)")
    args = parser.parse_args()
    if not args.max_return > 0:
        parser.error("--max_return must be > 0")
    make_all(args.paths, args.out, args.max_return)


if __name__ == "__main__":
    main()
