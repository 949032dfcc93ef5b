"""Detection metrics (pycocotools) and the detection confusion matrix, on hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest

from defectscope.evaluation.detection import ImageBoxes, coco_metrics, confusion

CLASSES = ["dent", "rust"]


def truth() -> list[ImageBoxes]:
    return [
        ImageBoxes(np.array([[10, 10, 50, 50], [60, 60, 90, 90]], float), np.array([0, 1])),
        ImageBoxes(np.array([[20, 20, 80, 40]], float), np.array([1])),
    ]


def test_perfect_detections_score_one_and_none_score_zero() -> None:
    perfect = [ImageBoxes(t.boxes, t.labels, np.full(len(t.labels), 0.9)) for t in truth()]
    metrics = coco_metrics(truth(), perfect, CLASSES, 100)
    assert metrics["map50"] == pytest.approx(1.0) and metrics["map50_95"] == pytest.approx(1.0)
    assert metrics["per_class_ap50"] == {"dent": pytest.approx(1.0), "rust": pytest.approx(1.0)}
    nothing = [ImageBoxes(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)) for _ in truth()]
    assert coco_metrics(truth(), nothing, CLASSES, 100)["map50"] == 0.0


def test_a_wrong_class_and_a_miss_lower_the_ap() -> None:
    found = [
        ImageBoxes(np.array([[10, 10, 50, 50]], float), np.array([1]), np.array([0.8])),
        ImageBoxes(np.array([[20, 20, 80, 40]], float), np.array([1]), np.array([0.9])),
    ]
    metrics = coco_metrics(truth(), found, CLASSES, 100)
    assert metrics["per_class_ap50"]["dent"] == 0.0  # its box was called rust
    assert 0.0 < metrics["per_class_ap50"]["rust"] < 1.0  # one of two found, one false alarm
    matrix = confusion(truth(), found, 2)
    # rows predicted, columns true; index 2 is background
    assert matrix.tolist() == [[0, 0, 0], [1, 1, 0], [0, 1, 0]]
