"""Metrics files with unreadable lines, and where W&B writes its files."""

import json
import os
import subprocess
import sys

import pytest

from rfm_jax.infra.metrics import MetricsWriter, read_rows


def test_unreadable_lines_are_counted_and_dropped_on_resume(tmp_path, capsys):
    """Bytes that are not UTF-8, a torn row, a JSON value that is no row: each is skipped and
    counted; a resume keeps the readable rows up to its step and says how many lines it dropped."""
    path = tmp_path / "metrics" / "train_seed0.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'{"step": 50, "x": 1.0}\n\xff\xfe garbage\n{"step": 100, "x": 2.0}\n7\n'
                     b'{"step": 150, "x": 3.0}\n{"step": 200, "x"')
    rows, bad = read_rows(str(path))
    assert [r["step"] for r in rows] == [50, 100, 150] and bad == 3
    MetricsWriter(str(tmp_path), ["seed0"], resume_step=100).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [50, 100]
    assert f"Dropped 3 unreadable line(s) of {path}" in capsys.readouterr().out


SINK = """
from rfm_jax.infra.wandb_sink import WandbSettings, WandbSink
sink = WandbSink({workdir!r}, ["seed0"], WandbSettings("rfm-jax-tests", None, None), {{}}, resume=False)
sink.log(0, "train", {{"step": 1, "critic_loss": 0.5}})
sink.close()
"""


@pytest.mark.parametrize("user_dir", [False, True])
def test_wandb_writes_under_the_users_wandb_dir_else_the_workdir(user_dir, tmp_path):
    """In a fresh process each: W&B reads its settings once per process."""
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_DIR"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", **({"WANDB_DIR": str(tmp_path / "mine")} if user_dir else {}))
    workdir = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-c", SINK.format(workdir=str(workdir))], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    where = (tmp_path / "mine") if user_dir else workdir
    assert [d for d in os.listdir(where / "wandb") if d.startswith("offline-run-")]
    assert user_dir != (workdir / "wandb").exists()
