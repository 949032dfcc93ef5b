"""The trainer on a tiny synthetic set: run folder contents, class weights, resume rules."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from defectscope.core.errors import RunFolderError
from defectscope.training.head import class_weights
from defectscope.training.trainer import resume, train
from tests.helpers import tiny_config


def test_run_folder_holds_everything(tiny_run: Path) -> None:
    for name in (
        "config.yaml",
        "results.csv",
        "state.json",
        "training_curves.png",
        "weights/best.keras",
        "weights/last.keras",
        "weights/metadata.json",
        "evaluation/metrics.json",
        "evaluation/confusion_matrix.png",
        "evaluation/report.md",
        "evaluation/misclassified.csv",
        "evaluation/misclassified.png",
    ):
        assert (tiny_run / name).is_file(), name
    assert any((tiny_run / "logs").rglob("events.out.tfevents*"))
    assert not (tiny_run / "backup").exists()
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert config["image_size"] == 71 and config["augment"]["flip"] is True
    with open(tiny_run / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["phase"], r["epoch"]) for r in rows] == [
        ("head", "1"),
        ("head", "2"),
        ("finetune", "1"),
    ]
    metrics = json.loads((tiny_run / "evaluation" / "metrics.json").read_text())
    assert metrics["num_images"] == 12
    state = json.loads((tiny_run / "state.json").read_text())
    assert state["stage"] == "done" and state["val_accuracy"] == metrics["accuracy"]
    metadata = json.loads((tiny_run / "weights" / "metadata.json").read_text())
    assert metadata["classes"][0] == "crazing" and metadata["image_size"] == 71


def test_existing_run_folder_is_not_overwritten(tiny_run: Path, synthetic_records: Path) -> None:
    with pytest.raises(RunFolderError, match="use --resume"):
        train(tiny_config(synthetic_records, tiny_run))


def test_resume_needs_a_run(tmp_path: Path, synthetic_records: Path) -> None:
    with pytest.raises(RunFolderError, match="nothing to resume"):
        resume(tmp_path / "never")


def test_class_weights_only_when_imbalanced() -> None:
    assert class_weights(np.array([0, 0, 1, 1]), 2, "auto") is None
    weights = class_weights(np.array([0, 0, 0, 1]), 2, "auto")
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert class_weights(np.array([0, 0, 0, 1]), 2, "none") is None
    assert class_weights(np.array([0, 1]), 2, "balanced") == {0: 1.0, 1: 1.0}


def test_resuming_a_finished_run_changes_nothing(tiny_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (tiny_run / "weights").iterdir()}
    result = resume(tiny_run)
    metrics = json.loads((tiny_run / "evaluation" / "metrics.json").read_text())
    assert result.metrics == metrics
    assert {p: p.stat().st_mtime_ns for p in (tiny_run / "weights").iterdir()} == before
