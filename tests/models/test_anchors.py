"""The detector's anchors: how many true boxes they match, and the size chosen for a dataset."""

from __future__ import annotations

import numpy as np
import pytest

from defectscope.models import anchors as anchors_module
from defectscope.models.anchors import (
    ANCHOR_SIZES,
    MAX_BOXES_PER_CLASS,
    box_coverage,
    choose_anchor_size,
    create_anchor_generator,
)

RATIOS = (0.5, 1.0, 2.0)


def _squares(side: float, count: int, seed: int) -> np.ndarray:
    corner = np.random.default_rng(seed).uniform(0, 200, size=(count, 2))
    return np.concatenate([corner, corner + side], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def small_and_large():
    """Pits of 12 px and patches of 48 px at random places of a 256 px image."""
    boxes = np.concatenate([_squares(12, 50, seed=0), _squares(48, 50, seed=1)])
    return boxes, np.array([0] * 50 + [1] * 50), ["pit", "patch"]


def _coverage(size: float, boxes, labels, classes) -> dict:
    return box_coverage(create_anchor_generator(7, size, RATIOS), 256, boxes, labels, classes)


def test_small_defects_get_anchors_their_size_and_large_ones_keep_theirs(small_and_large) -> None:
    """KerasHub's size (P3 anchors of 32 px) matches no 12 px pit; the chosen size matches most
    of them and still every 48 px patch."""
    boxes, labels, classes = small_and_large
    assert _coverage(4.0, boxes, labels, classes) == {"pit": 0.0, "patch": 1.0}
    size, coverage = choose_anchor_size(boxes, labels, classes, 256, 7, RATIOS)
    assert size in ANCHOR_SIZES and size < 4.0
    assert coverage == _coverage(size, boxes, labels, classes)
    assert coverage["pit"] >= 0.8 and coverage["patch"] == 1.0


def test_the_chosen_size_is_best_for_the_worst_matched_class(small_and_large) -> None:
    boxes, labels, classes = small_and_large
    _, chosen = choose_anchor_size(boxes, labels, classes, 256, 7, RATIOS)
    worst = [min(_coverage(size, boxes, labels, classes).values()) for size in ANCHOR_SIZES]
    assert min(chosen.values()) == max(worst)


def test_a_tie_keeps_kerashubs_size() -> None:
    """A 64 px square at the image's centre: sizes 1 to 11 all match it; 4 is kept."""
    boxes, labels = np.array([[96, 96, 160, 160]], np.float32), np.array([0])
    assert _coverage(1.0, boxes, labels, ["patch"]) == _coverage(8.0, boxes, labels, ["patch"])
    assert choose_anchor_size(boxes, labels, ["patch"], 256, 7, RATIOS) == (4.0, {"patch": 1.0})


def test_no_box_keeps_kerashubs_size() -> None:
    empty = np.zeros((0, 4), np.float32)
    assert choose_anchor_size(empty, np.zeros((0,), int), ["pit"], 256, 7, RATIOS) == (4.0, {})


def test_many_boxes_are_compared_in_chunks_with_the_same_result(monkeypatch) -> None:
    boxes = _squares(20, 600, seed=2)
    labels = np.arange(600) % 2
    chunked = _coverage(2.0, boxes, labels, ["a", "b"])
    monkeypatch.setattr(anchors_module, "BOXES_PER_CHUNK", 10_000)
    assert len(boxes) < anchors_module.BOXES_PER_CHUNK
    assert _coverage(2.0, boxes, labels, ["a", "b"]) == chunked


def test_a_sample_of_each_class_chooses_the_size() -> None:
    labels = np.array([0] * (MAX_BOXES_PER_CLASS + 700) + [1] * 3)
    rows = anchors_module._class_sample(labels, ["common", "rare"])
    assert (labels[rows] == 0).sum() == MAX_BOXES_PER_CLASS and (labels[rows] == 1).sum() == 3
    assert len(set(rows.tolist())) == len(rows)
