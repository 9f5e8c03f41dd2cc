"""The notebooks in notebooks/ run top to bottom with small settings (RFM_JAX_QUICK=1), in a
fresh kernel each, without a display; they are stored without outputs."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".ipynb"))


def test_the_four_notebooks_exist():
    assert NOTEBOOKS == ["01_estimators.ipynb", "02_custom_agent.ipynb", "03_sweeps.ipynb", "04_custom_env.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_is_stored_without_outputs(name, tmp_path, monkeypatch):
    book = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count") for cell in book.cells
               if cell.cell_type == "code"), f"{name} is stored with outputs"
    monkeypatch.setenv("RFM_JAX_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("MUJOCO_GL", raising=False)  # the notebook picks a renderer as a user's would
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(out.get("text", "") for cell in book.cells for out in cell.get("outputs", ()))
    assert "Error" not in text, text[-2000:]
    if name == "01_estimators.ipynb":
        share = float(text.split("left mode: ")[1].split()[0])
        assert 0.3 < share < 0.7, text  # both modes are found
    if name == "04_custom_env.ipynb":
        assert "EnvSpec(obs_dim=2, action_dim=2, episode_length=50)" in text and "eval return by step:" in text
    if name == "03_sweeps.ipynb":
        assert "runs: ['seed0_temperature0.01', 'seed0_temperature0.05', 'seed1_temperature0.01'" in text
