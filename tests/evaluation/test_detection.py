"""Detection metrics (pycocotools) and the detection confusion matrix, on hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest

from defectscope.evaluation.detection import (
    BOX_CONFIDENCE_CANDIDATES,
    ImageBoxes,
    box_f1,
    choose_box_confidence,
    coco_metrics,
    confusion,
    where_ap_goes,
)

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


def test_an_image_with_more_than_100_boxes_is_scored_on_all_of_them() -> None:
    """pycocotools' own summary counts 100 boxes per image: 150 perfect boxes scored 0.67."""
    corners = np.array([[i % 15 * 6, i // 15 * 6] for i in range(150)], float)
    dense = ImageBoxes(np.hstack([corners, corners + 5]), np.zeros(150, int))
    perfect = ImageBoxes(dense.boxes, dense.labels, np.linspace(0.9, 0.5, 150))
    metrics = coco_metrics([dense], [perfect], CLASSES, 100)
    assert metrics["map50"] == pytest.approx(1.0) and metrics["map50_95"] == pytest.approx(1.0)
    assert metrics["per_class_ap50"]["dent"] == pytest.approx(1.0)


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


def _with_false_alarms() -> list[ImageBoxes]:
    """Every true box found at 0.8; a false alarm per image at 0.6 and one more at 0.3."""
    found = []
    for t in truth():
        alarms = np.array([[0, 0, 5, 5], [92, 0, 99, 5]], float)
        boxes = np.concatenate([t.boxes, alarms])
        labels = np.concatenate([t.labels, [0, 1]])
        found.append(
            ImageBoxes(boxes, labels, np.concatenate([np.full(len(t.labels), 0.8), [0.6, 0.3]]))
        )
    return found


def test_box_f1_counts_right_boxes_false_alarms_and_misses() -> None:
    found = _with_false_alarms()
    low = box_f1(truth(), found, 2, 0.25)  # 3 right, 4 false alarms
    assert low["precision"] == pytest.approx(3 / 7) and low["recall"] == 1.0
    mid = box_f1(truth(), found, 2, 0.5)  # 3 right, 2 false alarms
    assert mid["precision"] == pytest.approx(3 / 5)
    high = box_f1(truth(), found, 2, 0.7)
    assert high == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    none = box_f1(truth(), found, 2, 0.9)  # nothing shown: every box missed
    assert none == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_the_box_confidence_is_the_best_f1_and_a_tie_keeps_the_nearest_to_a_quarter() -> None:
    chosen, f1 = choose_box_confidence(truth(), _with_false_alarms(), 2)
    assert list(f1) == [f"{c:.2f}" for c in BOX_CONFIDENCE_CANDIDATES]
    assert f1[f"{chosen:.2f}"] == max(f1.values()) == 1.0
    assert chosen == 0.65  # F1 1.0 from 0.65 to 0.8: the nearest to 0.25 of those
    nothing = [ImageBoxes(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)) for _ in truth()]
    assert choose_box_confidence(truth(), nothing, 2)[0] == 0.25  # every F1 0: the default


def test_where_ap_goes_separates_the_boxes_extent_from_the_class() -> None:
    perfect = [ImageBoxes(t.boxes, t.labels, np.full(len(t.labels), 0.9)) for t in truth()]
    assert where_ap_goes(truth(), perfect, CLASSES, 100) == {
        "map_at_iou": {"0.10": pytest.approx(1.0), "0.30": pytest.approx(1.0), "0.50": 1.0},
        "map50_one_class": pytest.approx(1.0),
    }
    # every box found with its class, a third as wide (IoU 1/3): only IoU 0.1 and 0.3 match
    thin = []
    for t in truth():
        boxes = t.boxes.copy()
        boxes[:, 2] = boxes[:, 0] + (boxes[:, 2] - boxes[:, 0]) / 3
        thin.append(ImageBoxes(boxes, t.labels, np.full(len(t.labels), 0.9)))
    found = where_ap_goes(truth(), thin, CLASSES, 100)
    assert found["map_at_iou"]["0.10"] == pytest.approx(1.0)
    assert found["map_at_iou"]["0.30"] == pytest.approx(1.0)
    assert found["map_at_iou"]["0.50"] == pytest.approx(0.0)
    assert found["map50_one_class"] == pytest.approx(0.0)
    # every box in the right place with the wrong class: only one class for all recovers it
    swapped = [ImageBoxes(t.boxes, 1 - t.labels, np.full(len(t.labels), 0.9)) for t in truth()]
    found = where_ap_goes(truth(), swapped, CLASSES, 100)
    assert found["map_at_iou"] == {"0.10": 0.0, "0.30": 0.0, "0.50": 0.0}
    assert found["map50_one_class"] == pytest.approx(1.0)
    nothing = [ImageBoxes(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)) for _ in truth()]
    assert where_ap_goes(truth(), nothing, CLASSES, 100)["map50_one_class"] == 0.0
