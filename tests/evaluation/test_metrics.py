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
    with Image.open(tmp_path / "confusion_matrix.png") as image:
        matrix = np.asarray(image.convert("RGB"))
    assert matrix.shape[1] > 2 * matrix.shape[0] * 0.8  # counts and normalised, side by side
    assert _has_colour(matrix, (8, 48, 107), tolerance=30)  # a dark-blue (high recall) cell
    with Image.open(tmp_path / "misclassified.png") as image:
        wrong = np.asarray(image.convert("RGB"))
    assert wrong.shape[1] > 150 and (wrong < 10).all(axis=-1).any()  # the black mistake image


def _curve_rows(phases: tuple[str, ...]) -> list[dict[str, str]]:
    return [
        {
            "phase": phase,
            "epoch": str(epoch),
            "loss": str(1.0 / epoch),
            "accuracy": str(0.5 + 0.1 * epoch),
            "selection_loss": "",
            "selection_accuracy": "0.4",
        }
        for phase in phases
        for epoch in (1, 2, 3)
    ]


def _has_colour(picture: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool((np.abs(picture[..., :3].astype(int) - rgb).max(axis=-1) <= tolerance).any())


def test_training_curves_draw_a_row_per_phase(tmp_path: Path) -> None:
    one = plot_training_curves(_curve_rows(("head",)), tmp_path / "one.png")
    two = plot_training_curves(_curve_rows(("head", "finetune")), tmp_path / "two.png")
    with Image.open(one) as small, Image.open(two) as tall:
        assert small.size[0] == tall.size[0]
        assert 1.8 < tall.size[1] / small.size[1] < 2.2  # a second row of plots
        pixels = np.asarray(tall.convert("RGB"))
    assert _has_colour(pixels, (31, 119, 180))  # the training curve (matplotlib's C0)
    assert _has_colour(pixels, (255, 127, 14))  # the validation curve (C1)
