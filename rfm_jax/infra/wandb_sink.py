"""Optional Weights & Biases logging: each run (``seed3``, ``seed3_temperature0.02``) of a program
is its own W&B run, grouped by the workdir (its last two path components), and gets the same rows
as the JSONL and TensorBoard files (``rfm_jax.infra.metrics``), keyed ``train/<metric>`` and ``eval/<metric>`` against
``env_step``.

A run's W&B id is a hash of the workdir's absolute path and the run's name, so ``--resume`` from
the same workdir continues the same W&B runs (rows between the last checkpoint and a crash were
already sent; W&B keeps them, the JSONL files drop them).  ``WANDB_MODE=offline`` writes the runs
under ``<workdir>/wandb`` with no network (``wandb sync`` uploads them later).  wandb is an extra:
``pip install 'rfm_jax[wandb]'``.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple


class WandbSettings(NamedTuple):
    project: str  # W&B project
    entity: str | None  # W&B entity (user or team); None: the default of the logged-in user
    group: str | None  # W&B group; None: ``default_group(workdir)``


def missing() -> str | None:
    """Why W&B cannot be used here (one line), or None."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return "config.wandb=True needs the wandb package: pip install 'rfm_jax[wandb]' (or pip install wandb)"
    return None


def default_group(workdir: str) -> str:
    """The workdir's last two path components (``runs/cheetah``, ``rfm/gym_Hopper-v5`` of compare.py)."""
    parts = os.path.abspath(workdir).split(os.sep)
    return "/".join(p for p in parts[-2:] if p)


def run_id(workdir: str, name: str) -> str:
    """The W&B id of run ``name`` of ``workdir``: the same on every resume from that path."""
    return hashlib.sha1(f"{os.path.abspath(workdir)}\0{name}".encode()).hexdigest()[:16]


class WandbSink:
    """One W&B run per name; ``log(index, kind, row)`` sends one metrics row of run ``index``."""

    def __init__(self, workdir: str, names: list[str], settings: WandbSettings, config: dict):
        import wandb

        group = settings.group or default_group(workdir)
        self.runs = []
        for name in names:
            run = wandb.init(project=settings.project, entity=settings.entity, group=group, name=f"{group}/{name}",
                             id=run_id(workdir, name), resume="allow", dir=workdir, reinit="create_new",
                             config={**config, "run": name}, job_type="train",
                             settings=wandb.Settings(console="off", quiet=True))
            run.define_metric("env_step")
            for kind in ("train", "eval"):
                run.define_metric(f"{kind}/*", step_metric="env_step")
            self.runs.append(run)

    def log(self, index: int, kind: str, row: dict) -> None:
        self.runs[index].log({"env_step": row["step"], **{f"{kind}/{k}": v for k, v in row.items()
                                                          if k != "step" and v is not None}})

    def close(self) -> None:
        for run in self.runs:
            run.finish()
        self.runs = []
