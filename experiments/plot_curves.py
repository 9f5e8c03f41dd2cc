"""Learning curves of a run.py workdir: eval return per seed, the mean and a bootstrap 95% CI.

    python experiments/plot_curves.py --workdir runs/cpu_cartpole --out experiments/results/cpu_cartpole

Writes <out>/curves.png and <out>/returns.json (per-seed eval returns at every evaluation, the
final mean and its bootstrap CI over seeds, wall time).
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def bootstrap_ci(values: np.ndarray, num: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean over seeds."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, (num, len(values)), replace=True).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def load(workdir: str):
    config = json.load(open(os.path.join(workdir, "config.json")))
    curves, wall = [], []
    setup = os.path.join(workdir, "setup.json")  # run names, seed{s}[_<field><value>]; older runs: by index
    names = [f"seed{i}" for i in range(config["num_seeds"])]
    if os.path.exists(setup):
        names = json.load(open(setup))["runs"]
    for name in names:
        rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics", f"eval_{name}.jsonl"))]
        curves.append([(r["step"], r["eval_return_mean"]) for r in rows])
        wall.append(rows[-1]["wall_time"] if rows else float("nan"))
    steps = np.array([s for s, _ in curves[0]])
    returns = np.array([[r for _, r in c] for c in curves], dtype=float)  # [seeds, evals]
    return config, steps, returns, max(wall), names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config, steps, returns, wall, names = load(args.workdir)
    seeds = [config["seed"] + i for i in range(config["num_seeds"])]
    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in zip(names, returns, strict=True):
        ax.plot(steps, curve, color="tab:blue", alpha=0.35, lw=1, label=name)
    ax.plot(steps, returns.mean(0), color="tab:blue", lw=2.5, label="mean")
    ci = np.array([bootstrap_ci(returns[:, i]) for i in range(len(steps))])
    ax.fill_between(steps, ci[:, 0], ci[:, 1], color="tab:blue", alpha=0.15, label="95% bootstrap CI")
    ax.set(xlabel="env steps (frames)", ylabel=f"eval return ({config['eval_episodes']} episodes, greedy)",
           title=f"{config.get('algo', 'rfm')} on {config['task']}", ylim=(0, 1000))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "curves.png"), dpi=120)
    final = returns[:, -1]
    summary = {
        "task": config["task"], "steps": steps.tolist(), "seeds": seeds, "runs": names,
        "eval_returns": returns.tolist(),
        "final_step": int(steps[-1]),
        "final_per_seed": final.tolist(), "final_mean": float(final.mean()),
        "final_ci95": bootstrap_ci(final), "wall_time_s": wall,
    }
    with open(os.path.join(args.out, "returns.json"), "w") as f:
        json.dump(summary, f, indent=2)
    keys = ("final_step", "final_per_seed", "final_mean", "final_ci95", "wall_time_s")
    print(json.dumps({k: summary[k] for k in keys}))


if __name__ == "__main__":
    main()
