"""Optional Weights & Biases logging: each run (``seed3``, ``seed3_temperature0.02``) of a program
is its own W&B run, grouped by the workdir (its last two path components), and gets the same rows
as the JSONL and TensorBoard files (``rfm_jax.infra.metrics``), keyed ``train/<metric>`` and
``eval/<metric>`` against ``env_step``.

A run that starts afresh gets a new random W&B id, kept in ``<workdir>/wandb_ids/<run>.txt``;
``--resume`` reads it back and continues that W&B run (so a moved workdir keeps its W&B runs, and
a new run in an old workdir's place gets new ones).  On resume, rows at env steps W&B already has
(sent before a crash; a resumed run recomputes them exactly) are not sent again, where W&B can
say which (online); offline they are sent again with the same values.  W&B writes its files
under ``$WANDB_DIR`` where it is set, else under the workdir; ``WANDB_MODE=offline``
writes the runs there (``<workdir>/wandb``) with no network (``wandb sync`` uploads them later).
wandb is an extra: ``pip install 'rfm_jax[wandb]'``.
"""

from __future__ import annotations

import os
import uuid
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


def run_id(workdir: str, name: str, resume: bool) -> str:
    """The W&B id of run ``name``: the saved one on resume, else a new one (saved)."""
    path = os.path.join(workdir, "wandb_ids", f"{name}.txt")
    if resume and os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    new = uuid.uuid4().hex[:16]
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)
    return new


class WandbSink:
    """One W&B run per name; ``log(index, kind, row)`` sends one metrics row of run ``index``.
    Raises a one-line ``RuntimeError`` when W&B cannot start (login, network, entity)."""

    def __init__(self, workdir: str, names: list[str], settings: WandbSettings, config: dict, resume: bool):
        import wandb

        group = settings.group or default_group(workdir)
        self.runs, self.logged = [], []
        try:
            for name in names:
                run = wandb.init(project=settings.project, entity=settings.entity, group=group,
                                 name=f"{group}/{name}", id=run_id(workdir, name, resume), resume="allow",
                                 dir=None if os.environ.get("WANDB_DIR") else workdir,  # the user's WANDB_DIR wins
                                 reinit="create_new", config={**config, "run": name}, job_type="train",
                                 settings=wandb.Settings(console="off", quiet=True))
                run.define_metric("env_step")
                for kind in ("train", "eval"):
                    run.define_metric(f"{kind}/*", step_metric="env_step")
                self.runs.append(run)
                self.logged.append(run.summary.get("env_step", -1) if resume else -1)
        except Exception as error:  # noqa: BLE001 - wandb's errors: login, network, permissions, ...
            self.close()
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RuntimeError(f"W&B could not start ({type(error).__name__}: {first[:300]}); run `wandb login`, "
                               "check config.wandb_project / wandb_entity, or set WANDB_MODE=offline") from None

    def log(self, index: int, kind: str, row: dict) -> None:
        step, logged = row["step"], self.logged[index]
        if step < logged or (step == logged and kind == "train"):  # sent before a crash, recomputed exactly
            return
        self.runs[index].log({"env_step": row["step"], **{f"{kind}/{k}": v for k, v in row.items()
                                                          if k != "step" and v is not None}})

    def close(self) -> None:
        for run in self.runs:
            run.finish()
        self.runs = []
