"""``detect.box_loss``: the CIoU loss decodes KerasHub's anchor deltas into boxes and scores
their overlap with the true boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from defectscope.core.errors import ConfigError
from defectscope.models.box_loss import CIOU_LOSS_WEIGHT, check_box_loss, create_box_loss

IMAGE_SIZE = 96


def _detector_and_targets():
    """A 96 px detector and its label encoder's deltas and weights (positive anchors over
    their count, KerasHub's box weights) for two images: one with two boxes, one empty."""
    from keras import ops

    from defectscope.models.detector import create_detector

    detector = create_detector(["dent", "rust"], image_size=IMAGE_SIZE, weights=None)
    boxes = np.zeros((2, 3, 4), np.float32)
    labels = np.full((2, 3), -1.0, np.float32)
    boxes[0, :2], labels[0, :2] = [[10, 12, 40, 30], [50, 20, 90, 34]], [0, 1]
    targets, classes = detector.label_encoder(
        images=ops.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3)), gt_boxes=boxes, gt_classes=labels
    )
    targets, classes = ops.convert_to_numpy(targets), ops.convert_to_numpy(classes)
    positive = (classes > -1).astype(np.float32)
    assert positive.sum() >= 2 and not positive[1].any()
    return detector, targets, positive / positive.sum()


def _ciou_loss(detector, l1_beta=None):
    from defectscope.models.anchors import anchor_settings
    from defectscope.models.box_loss import _ciou_loss_class

    return _ciou_loss_class()(anchor_settings(detector), IMAGE_SIZE, l1_beta=l1_beta)


def test_ciou_is_zero_for_the_true_deltas_and_one_minus_iou_for_a_box_twice_as_large() -> None:
    """A prediction twice as wide and tall about the same centre overlaps its true box at IoU
    1/4 with no centre or aspect penalty: 1 - CIoU 0.75 per positive anchor (a loss on the
    deltas themselves would give another figure); centres moved by half an anchor's width cost
    more than a tenth (a decoding that ignored the anchors' size would move them half a
    pixel)."""
    detector, targets, weights = _detector_and_targets()
    loss = _ciou_loss(detector)
    assert float(loss(targets, targets, sample_weight=weights)) == pytest.approx(0.0, abs=1e-4)
    doubled = targets + np.array([0, 0, math.log(2), math.log(2)], np.float32)
    value = float(loss(targets, doubled, sample_weight=weights))
    assert value == pytest.approx(CIOU_LOSS_WEIGHT * 0.75, abs=1e-3)
    moved = targets + np.array([0.5, 0, 0, 0], np.float32)  # centres off by half an anchor
    assert float(loss(targets, moved, sample_weight=weights)) > 0.1


def test_box_loss_ciou_adds_smooth_l1_of_the_deltas() -> None:
    """``box_loss: ciou`` is the CIoU term plus the configured smooth L1 (which keeps a
    gradient on predictions beyond the log-size clip): for the doubled box, log 2 off on two
    of four coordinates, smooth L1 (Huber(beta) / beta, the mean of the four) is
    (log 2 - beta / 2) / 2."""
    detector, targets, weights = _detector_and_targets()
    beta = 0.1
    loss, weight = create_box_loss("ciou", detector, beta=beta)
    assert weight == 1.0
    doubled = targets + np.array([0, 0, math.log(2), math.log(2)], np.float32)
    smooth_l1 = (math.log(2) - beta / 2) / 2
    expected = CIOU_LOSS_WEIGHT * 0.75 + smooth_l1
    assert float(loss(targets, doubled, sample_weight=weights)) == pytest.approx(expected, 1e-3)


def test_anchors_without_a_true_box_add_neither_loss_nor_gradient() -> None:
    """Anchors matched to padding rows get degenerate targets (log-sizes near -20); with their
    weight 0 the loss stays finite and an exploding prediction there moves nothing."""
    import tensorflow as tf

    detector, targets, weights = _detector_and_targets()
    loss, _ = create_box_loss("ciou", detector, beta=0.1)
    assert targets[weights == 0].min() < -10  # what the loss must survive
    predicted = tf.Variable(np.where(weights[..., None] > 0, targets, 50.0).astype(np.float32))
    with tf.GradientTape() as tape:
        value = loss(targets, predicted, sample_weight=weights)
    gradient = tape.gradient(value, predicted).numpy()
    assert np.isfinite(float(value)) and np.isfinite(gradient).all()
    assert not gradient[weights == 0].any()


def test_collapsed_boxes_give_a_finite_loss_in_a_tensorflow_graph() -> None:
    """Training runs the loss in a graph, where CIoU's aspect term of a zero-width box was NaN
    (every loss of the first epoch NaN); log-sizes are clipped before decoding."""
    import tensorflow as tf

    detector, targets, weights = _detector_and_targets()
    loss, _ = create_box_loss("ciou", detector, beta=0.1)
    collapsed = targets.copy()
    collapsed[..., 2:] = -25.0  # exp(-25) of an anchor: equal corners in float32
    in_graph = tf.function(lambda true, predicted: loss(true, predicted, sample_weight=weights))
    for true, predicted in ((targets, collapsed), (collapsed, targets)):
        assert np.isfinite(float(in_graph(true, predicted)))


def test_smooth_l1_keeps_its_beta_and_weight() -> None:
    import keras

    loss, weight = create_box_loss("smooth_l1", None, beta=0.1)
    assert isinstance(loss, keras.losses.Huber) and weight == pytest.approx(10.0)


def test_the_ciou_loss_survives_serialisation() -> None:
    import keras

    detector, targets, weights = _detector_and_targets()
    loss, _ = create_box_loss("ciou", detector, beta=0.1)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    doubled = targets + np.array([0, 0, math.log(2), math.log(2)], np.float32)
    assert restored.l1_beta == 0.1
    assert float(restored(targets, doubled, sample_weight=weights)) == pytest.approx(
        float(loss(targets, doubled, sample_weight=weights))
    )


def test_an_unknown_box_loss_is_refused_naming_it() -> None:
    for bad in ("giou", "", None):
        with pytest.raises(ConfigError, match=f"box_loss must be one of .*got {bad!r}"):
            check_box_loss(bad)
