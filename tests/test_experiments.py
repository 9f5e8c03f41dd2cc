"""Both experiment scripts run end to end (their --quick settings) and write JSON + PNG."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script, extra",
    [("estimator_variance", []), ("toy2d", ["--modes", "none,optimal", "--steps", "60", "--chunk", "30"])],
)
def test_experiment_quick_run_writes_outputs(tmp_path, script, extra):
    cmd = [sys.executable, str(ROOT / "experiments" / f"{script}.py"), "--quick", "--out", str(tmp_path), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    record = json.loads((tmp_path / f"{script}.json").read_text())
    assert record, "empty JSON record"
    png = (tmp_path / f"{script}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
