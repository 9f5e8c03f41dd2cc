"""Run outputs: per-run JSON-lines files and TensorBoard event files, keyed by the run's name
(``seed3``, or ``seed3_temperature0.02`` in a sweep; ``rfm_jax.training.sweeps``).

    <workdir>/metrics/train_<run>.jsonl   one row per log interval (losses, ESS, coefficient, ...)
    <workdir>/metrics/eval_<run>.jsonl    one row per evaluation (eval_return_mean / _std)
    <workdir>/tb/<run>/                   the same scalars as TensorBoard events (plus HParams
                                          of the swept values, ``write_hparams``)

With ``wandb`` (a started ``rfm_jax.infra.wandb_sink.WandbSink``) every row also goes to that
run's Weights & Biases run.

Every row holds ``step`` (env steps per env) and ``wall_time`` (seconds of training, summed over
resumed sessions).  On resume from step N, rows with step > N are dropped and TensorBoard purges
later events, so a resumed run's outputs match an uninterrupted one (``resume_step=-1``: a run
starting afresh drops every row a killed earlier attempt left).  Unreadable lines (a row torn by a
kill, bytes that are not UTF-8) are dropped on resume, and said so in one line.
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
    """The rows of a JSONL file; unreadable lines (torn by a kill mid-write, not UTF-8, not a JSON
    row with a ``step``) are skipped (``read_rows`` also counts them)."""
    return read_rows(path)[0]


def read_rows(path: str) -> tuple[list[dict], int]:
    """(the rows of a JSONL file, how many lines were unreadable and skipped)."""
    if not os.path.exists(path):
        return [], 0
    rows, bad = [], 0
    with open(path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                row = None
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
            elif line.strip():
                bad += 1
    return rows, bad


TIMING = ("wall_time", "env_steps_per_s")  # the fields of a row that time the run rather than its results


def read_workdir(workdir: str, drop: tuple = TIMING) -> dict:
    """{file name: [rows without the ``drop`` fields]} of every metrics file of a run's workdir:
    what two runs that should agree (a resumed one and an uninterrupted one) are compared by."""
    directory = os.path.join(workdir, "metrics")
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    return {name: [{k: v for k, v in row.items() if k not in drop} for row in read_jsonl(os.path.join(directory, name))]
            for name in names}


class MetricsWriter:
    def __init__(self, workdir: str, names: list[str], resume_step: int | None = None, wandb=None):
        self.dir = os.path.join(workdir, "metrics")
        os.makedirs(self.dir, exist_ok=True)
        self.names = list(names)
        if resume_step is not None:
            for kind in KINDS:
                for name in self.names:
                    self._repair(self.path(kind, name), resume_step)
        purge = None if resume_step is None else resume_step + 1
        self.tb = [SummaryWriter(os.path.join(workdir, "tb", name), purge_step=purge) for name in self.names]
        self.wandb = wandb

    @staticmethod
    def _repair(path: str, resume_step: int) -> None:
        """Keep the readable rows up to ``resume_step``; say how many unreadable lines were dropped."""
        rows, bad = read_rows(path)
        if bad and resume_step >= 0:
            print(f"Dropped {bad} unreadable line(s) of {path} (torn by a kill, or not UTF-8 JSON rows); "
                  "the rows around them are kept.", flush=True)
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows if r["step"] <= resume_step)

    def path(self, kind: str, name: str) -> str:
        return os.path.join(self.dir, f"{kind}_{name}.jsonl")

    def write_hparams(self, hparams: list[dict], final: list[dict]) -> None:
        """TensorBoard HParams: each run's swept values (and seed) against its final metrics."""
        for writer, hp, metrics in zip(self.tb, hparams, final, strict=True):
            writer.add_hparams(hp, {k: float(v) for k, v in metrics.items()}, name=".")

    def write(self, kind: str, step: int, wall_time: float, per_run: list[dict]) -> None:
        """Append one row per run; ``per_run[r]`` maps names to scalars."""
        if kind not in KINDS or len(per_run) != len(self.names):
            raise ValueError(f"MetricsWriter.write: kind must be in {KINDS} with one dict per run.")
        for index, values in enumerate(per_run):
            row = {"step": int(step), "wall_time": round(float(wall_time), 3)}
            row.update({k: _clean(v) for k, v in values.items()})
            with open(self.path(kind, self.names[index]), "a") as f:
                f.write(json.dumps(row) + "\n")
            for k, v in row.items():
                if k != "step" and v is not None:
                    self.tb[index].add_scalar(f"{kind}/{k}", v, global_step=int(step))
            if self.wandb is not None:
                self.wandb.log(index, kind, row)
        for writer in self.tb:
            writer.flush()

    def close(self) -> None:
        for writer in self.tb:
            writer.close()
        if self.wandb is not None:
            self.wandb.close()
