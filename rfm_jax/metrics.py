"""Run outputs: per-seed JSON-lines files and TensorBoard event files.

    <workdir>/metrics/train_seed{s}.jsonl   one row per log interval (losses, ESS, coefficient, ...)
    <workdir>/metrics/eval_seed{s}.jsonl    one row per evaluation (eval_return_mean / _std)
    <workdir>/tb/seed_{s}/                  the same scalars as TensorBoard events

Every row holds ``step`` (env steps per env) and ``wall_time`` (seconds of training, summed over
resumed sessions).  On resume from step N, rows with step > N are dropped and TensorBoard purges
later events, so a resumed run's outputs match an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os

from tensorboardX import SummaryWriter

KINDS = ("train", "eval")


def _clean(value):
    value = float(value)
    return None if math.isnan(value) else value


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
    def __init__(self, workdir: str, num_seeds: int, resume_step: int | None = None):
        self.dir = os.path.join(workdir, "metrics")
        os.makedirs(self.dir, exist_ok=True)
        self.num_seeds = num_seeds
        if resume_step is not None:
            for kind in KINDS:
                for seed in range(num_seeds):
                    path = self.path(kind, seed)
                    rows = [r for r in read_jsonl(path) if r["step"] <= resume_step]
                    with open(path, "w") as f:
                        f.writelines(json.dumps(r) + "\n" for r in rows)
        purge = None if resume_step is None else resume_step + 1
        self.tb = [SummaryWriter(os.path.join(workdir, "tb", f"seed_{s}"), purge_step=purge) for s in range(num_seeds)]

    def path(self, kind: str, seed: int) -> str:
        return os.path.join(self.dir, f"{kind}_seed{seed}.jsonl")

    def write(self, kind: str, step: int, wall_time: float, per_seed: list[dict]) -> None:
        """Append one row per seed; ``per_seed[s]`` maps names to scalars."""
        if kind not in KINDS or len(per_seed) != self.num_seeds:
            raise ValueError(f"MetricsWriter.write: kind must be in {KINDS} with one dict per seed.")
        for seed, values in enumerate(per_seed):
            row = {"step": int(step), "wall_time": round(float(wall_time), 3)}
            row.update({k: _clean(v) for k, v in values.items()})
            with open(self.path(kind, seed), "a") as f:
                f.write(json.dumps(row) + "\n")
            for k, v in row.items():
                if k != "step" and v is not None:
                    self.tb[seed].add_scalar(f"{kind}/{k}", v, global_step=int(step))
        for writer in self.tb:
            writer.flush()

    def close(self) -> None:
        for writer in self.tb:
            writer.close()
