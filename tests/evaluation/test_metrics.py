"""Metrics from scikit-learn and the report files, on hand-made predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from defectscope.evaluation.metrics import EvaluationResult, compute_metrics, misclassified_rows
from defectscope.evaluation.report import plot_training_curves, write_evaluation


def make_result() -> EvaluationResult:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[[0, 0, 1, 2, 2, 2]] * 0.8 + 0.2 / 3  # one "1" predicted as "2"
    image = np.zeros((8, 8, 3), np.uint8)
    return EvaluationResult(
        classes=["a", "b", "c"],
        labels=labels,
        probabilities=probabilities,
        source_ids=[f"img{i}.jpg" for i in range(6)],
        mistake_images={"img3.jpg": image},
    )


def test_metrics_values() -> None:
    metrics = compute_metrics(make_result())
    assert metrics["accuracy"] == 5 / 6
    assert metrics["num_errors"] == 1
    assert metrics["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [0, 0, 2]]
    assert metrics["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert metrics["per_class"]["c"]["precision"] == 2 / 3
    assert abs(metrics["macro_f1"] - np.mean([1.0, 2 / 3, 0.8])) < 1e-9


def test_misclassified_rows() -> None:
    (row,) = misclassified_rows(make_result())
    assert (row["source_id"], row["true"], row["predicted"]) == ("img3.jpg", "b", "c")
    assert abs(row["confidence"] - (0.8 + 0.2 / 3)) < 1e-9


def test_report_files(tmp_path: Path) -> None:
    metrics = write_evaluation(make_result(), tmp_path, "unit test")
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    report = (tmp_path / "report.md").read_text()
    assert "83.33%" in report and "| b | 1.0000 | 0.5000 | 0.6667 | 2 |" in report
    with open(tmp_path / "misclassified.csv") as handle:
        assert [r["source_id"] for r in csv.DictReader(handle)] == ["img3.jpg"]
    for picture, min_width in (("confusion_matrix.png", 600), ("misclassified.png", 150)):
        with Image.open(tmp_path / picture) as image:
            assert image.size[0] > min_width


def test_training_curves(tmp_path: Path) -> None:
    rows = [
        {
            "phase": p,
            "epoch": str(e),
            "loss": "1",
            "accuracy": "0.5",
            "val_loss": "",
            "val_accuracy": "0.4",
        }
        for p, e in (("head", 1), ("head", 2), ("finetune", 1))
    ]
    path = plot_training_curves(rows, tmp_path / "curves.png")
    assert path.stat().st_size > 1000
