"""Test-time flips: anchors and their mirrors, a mirror image's outputs mapped back onto the
plain image's anchors, and their average."""

from __future__ import annotations

import numpy as np
import pytest

from defectscope.inference.flips import (
    BOX_OUTPUT,
    CLASS_OUTPUT,
    PLAIN,
    TTA_FLIPS,
    FlipAverage,
    flip_images,
    mirror_anchors,
)
from defectscope.models.anchors import anchor_boxes, create_anchor_generator
from defectscope.models.detector import compiled_decoder, create_detector, per_image

SIZE = 96


def _anchors(size: int = SIZE) -> np.ndarray:
    return anchor_boxes(create_anchor_generator(7, 4.0, (0.5, 1.0, 2.0)), size)


def _mirrored(boxes: np.ndarray, rows: bool, columns: bool, size: int = SIZE) -> np.ndarray:
    mirrored = np.array(boxes, np.float64)
    if columns:
        mirrored[:, [0, 2]] = size - mirrored[:, [2, 0]]
    if rows:
        mirrored[:, [1, 3]] = size - mirrored[:, [3, 1]]
    return mirrored


@pytest.mark.parametrize("name", list(TTA_FLIPS))
def test_an_anchor_maps_to_its_mirror_where_the_grid_has_one(name) -> None:
    anchors = _anchors()
    rows, columns = TTA_FLIPS[name]
    mirror = mirror_anchors(anchors, SIZE, rows, columns)
    kept = mirror >= 0
    np.testing.assert_allclose(anchors[mirror[kept]], _mirrored(anchors[kept], rows, columns))
    assert (mirror[mirror[kept]] == np.flatnonzero(kept)).all(), "a mirror's mirror is itself"
    # KerasHub's anchors sit on cell corners: the first column (row) has no mirror
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    on_edge = centres[:, 0 if columns else 1] == 0
    assert not kept[on_edge].any() and 0.5 < kept.mean() < 1.0


def test_flip_images_reverses_the_axis_asked_for() -> None:
    images = np.arange(2 * 3 * 4 * 1).reshape(2, 3, 4, 1)
    assert (flip_images(images, False, True)[0, 0, :, 0] == images[0, 0, ::-1, 0]).all()
    assert (flip_images(images, True, False)[0, :, 0, 0] == images[0, ::-1, 0, 0]).all()
    assert (flip_images(images, False, False) == images).all()


def _outputs_on_mirrors(flips: FlipAverage, plain: dict) -> dict:
    """What a perfectly mirror-symmetric detector outputs on each mirror image, given its
    outputs on the plain one (anchors without a mirror get noise, which must not count)."""
    rng = np.random.default_rng(1)
    views = {PLAIN: plain}
    for name, (rows, columns) in TTA_FLIPS.items():
        mirror = flips.mirrors[name]
        boxes = rng.normal(size=plain[BOX_OUTPUT].shape) * 9
        logits = rng.normal(size=plain[CLASS_OUTPUT].shape) * 9
        kept = np.flatnonzero(mirror >= 0)
        boxes[:, mirror[kept]] = plain[BOX_OUTPUT][:, kept]
        boxes[:, mirror[kept], 0] *= -1 if columns else 1
        boxes[:, mirror[kept], 1] *= -1 if rows else 1
        logits[:, mirror[kept]] = plain[CLASS_OUTPUT][:, kept]
        views[name] = {BOX_OUTPUT: boxes, CLASS_OUTPUT: logits}
    return views


def test_the_average_of_a_symmetric_detectors_views_is_its_plain_output() -> None:
    anchors = _anchors()
    rng = np.random.default_rng(0)
    plain = {
        BOX_OUTPUT: rng.normal(size=(2, len(anchors), 4)).astype(np.float32),
        CLASS_OUTPUT: rng.normal(size=(2, len(anchors), 3)).astype(np.float32) * 4,
    }
    flips = FlipAverage(anchors, SIZE)
    averaged = flips.average(_outputs_on_mirrors(flips, plain))
    np.testing.assert_allclose(averaged[BOX_OUTPUT], plain[BOX_OUTPUT], atol=1e-5)
    np.testing.assert_allclose(averaged[CLASS_OUTPUT], plain[CLASS_OUTPUT], rtol=1e-5)


def test_averaging_moves_each_anchor_halfway_to_a_differing_view() -> None:
    anchors = _anchors()
    plain = {
        BOX_OUTPUT: np.zeros((1, len(anchors), 4), np.float32),
        CLASS_OUTPUT: np.zeros((1, len(anchors), 2), np.float32),  # probability 0.5
    }
    flips = FlipAverage(anchors, SIZE)
    views = _outputs_on_mirrors(flips, plain)
    mirror = flips.mirrors["horizontal"]
    kept = mirror >= 0
    views["horizontal"][BOX_OUTPUT][:, mirror[kept], 0] = -3.0  # offset +3 on the plain image
    views["horizontal"][CLASS_OUTPUT][:, mirror[kept]] = 800.0  # probability 1, no overflow
    averaged = flips.average(views)
    both = kept & (flips.mirrors["vertical"] >= 0)  # averaged over three views
    np.testing.assert_allclose(averaged[BOX_OUTPUT][0, both, 0], 1.0, atol=1e-6)
    probability = 1 / (1 + np.exp(-averaged[CLASS_OUTPUT][0, both]))
    np.testing.assert_allclose(probability, 2 / 3, atol=1e-6)
    np.testing.assert_allclose(averaged[BOX_OUTPUT][0, ~kept], 0.0, atol=1e-6)


@pytest.mark.parametrize("name", list(TTA_FLIPS))
def test_a_mirror_images_boxes_come_back_mirrored(name) -> None:
    """KerasHub's decoder on a view's outputs mapped onto the plain anchors finds the view's
    own boxes, mirrored: the anchor order and the offset signs agree with KerasHub's coding."""
    import keras

    keras.utils.set_random_seed(3)
    detector = create_detector(["a", "b"], SIZE, None, confidence=0.0, head_convs=1)
    image = np.random.default_rng(2).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    rows, columns = TTA_FLIPS[name]
    view = flip_images(image, rows, columns)
    outputs = {k: np.array(v) for k, v in detector(view, training=False).items()}
    flips = FlipAverage(anchor_boxes(detector.anchor_generator, SIZE), SIZE)
    mirror = flips.mirrors[name]
    outputs[CLASS_OUTPUT][:, mirror < 0] = -50.0  # anchors without a mirror find nothing
    boxes, view_logits, kept = flips.to_plain(name, outputs)
    logits = np.full_like(outputs[CLASS_OUTPUT], -50.0)
    logits[:, kept] = view_logits
    on_plain = {BOX_OUTPUT: np.zeros_like(outputs[BOX_OUTPUT]), CLASS_OUTPUT: logits}
    on_plain[BOX_OUTPUT][:, kept] = boxes
    decode = compiled_decoder(detector)
    found_view = per_image(decode({k: v.astype(np.float32) for k, v in outputs.items()}, view))
    found_plain = per_image(decode({k: v.astype(np.float32) for k, v in on_plain.items()}, image))
    (view_boxes, view_labels, view_scores), (boxes, labels, scores) = found_view[0], found_plain[0]
    assert len(view_boxes) > 10
    expected = _rows(_mirrored(view_boxes, rows, columns), view_labels, view_scores)
    np.testing.assert_allclose(_rows(boxes, labels, scores), expected, atol=1e-3)


def _rows(boxes, labels, scores) -> np.ndarray:
    """Detections as rows ``(score, label, box)`` in one order (tied scores by their box)."""
    rows = np.column_stack([np.round(scores, 4), labels, np.round(boxes, 1)])
    return rows[np.lexsort(rows.T[::-1])]
