"""notebooks/neu_walkthrough.ipynb, shortened (a NEU-DET subset, short training), executes and
learns: the classifier it trains beats chance by far and its detector finds boxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "neu_walkthrough.ipynb"


def test_neu_walkthrough_runs_short_and_learns(
    neu_root: Path, xception_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DEFECTSCOPE_NEU_ROOT", str(neu_root))
    monkeypatch.setenv("DEFECTSCOPE_XCEPTION_WEIGHTS", str(xception_weights))
    monkeypatch.setenv("DEFECTSCOPE_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("DEFECTSCOPE_NOTEBOOK_FAST", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": "."}}
    ).execute()
    metrics = json.loads((tmp_path / "classifier" / "evaluation" / "metrics.json").read_text())
    assert metrics["num_images"] == 60 and metrics["accuracy"] >= 0.7, metrics  # chance: 1/6
    detector = json.loads((tmp_path / "detector" / "evaluation" / "metrics.json").read_text())
    assert detector["task"] == "detect" and detector["num_images"] == 60
    pictures = [o for c in notebook.cells for o in c.get("outputs", []) if "data" in o]
    assert sum("image/png" in o["data"] for o in pictures) >= 6  # grid, curves, matrix, ...
    assert (tmp_path / "classifier" / "export" / "onnx" / "model.onnx").is_file()
