"""The KerasHub RetinaNet as defectscope builds it: initial biases, box codec, layer names."""

from __future__ import annotations

import numpy as np
import pytest

from defectscope.core.errors import ConfigError
from defectscope.models.anchors import anchor_coverage
from defectscope.models.detector import (
    PRIOR_PROBABILITY,
    create_detector,
    register_detector_layers,
    set_nms_iou,
    split_encoder,
)


@pytest.fixture(scope="module")
def detector():
    return create_detector(["dent", "rust", "scale"], image_size=96, weights=None, head_convs=1)


def test_heads_start_as_retinanet_does(detector) -> None:
    """Class logits at the foreground prior, box deltas at zero (KerasHub swaps them)."""
    box_bias = np.asarray(detector.box_head.prediction_layer.bias)
    class_bias = np.asarray(detector.classification_head.prediction_layer.bias)
    assert np.all(box_bias == 0.0)
    prior = 1 / (1 + np.exp(-class_bias))
    np.testing.assert_allclose(prior, PRIOR_PROBABILITY, rtol=1e-4)


def test_encoded_truths_decode_back_to_the_same_boxes(detector) -> None:
    """The label encoder and the decoder agree on formats: perfect raw outputs give the truth."""
    boxes = np.array([[[10, 20, 50, 70], [60, 5, 90, 40], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[0, 2, -1]], np.float32)
    images = np.zeros((1, 96, 96, 3), np.float32)
    deltas, classes = detector.label_encoder(images=images, gt_boxes=boxes, gt_classes=labels)
    classes = np.asarray(classes)
    logits = np.full((*classes.shape, 3), -10.0, np.float32)
    positive = np.argwhere(classes >= 0)
    logits[positive[:, 0], positive[:, 1], classes[classes >= 0].astype(int)] = 10.0
    raw = {"bbox_regression": np.asarray(deltas), "cls_logits": logits}
    decoded = detector.decode_predictions(raw, images)
    count = int(np.asarray(decoded["num_detections"])[0])
    found = sorted(
        zip(
            np.asarray(decoded["labels"])[0, :count].tolist(),
            np.asarray(decoded["boxes"])[0, :count].round(3).tolist(),
            strict=True,
        )
    )
    assert found == [(0, [10.0, 20.0, 50.0, 70.0]), (2, [60.0, 5.0, 90.0, 40.0])]


def test_the_decoder_keeps_as_many_boxes_as_asked(tmp_path) -> None:
    """150 confident anchors of one class, far apart: all 150 come out, and after a reload."""
    import keras

    detector = create_detector(["dent"], image_size=96, head_convs=1, max_detections=150)
    images = np.zeros((1, 96, 96, 3), np.float32)
    anchors = np.concatenate([np.asarray(a) for a in detector.anchor_generator(images[0]).values()])
    logits = np.full((1, len(anchors), 1), -10.0, np.float32)
    logits[0, :150] = 10.0  # the first ten P3 positions' 15 anchors, distinct at IoU 0.99
    raw = {"bbox_regression": np.zeros((1, len(anchors), 4), np.float32), "cls_logits": logits}
    set_nms_iou(detector, 0.99)
    path = tmp_path / "dense.keras"
    detector.save(path)
    register_detector_layers()
    for model in (detector, keras.saving.load_model(path)):
        decoded = model.decode_predictions(raw, images)
        assert int(np.asarray(decoded["num_detections"])[0]) == 150


def test_sizes_the_pyramid_cannot_divide_are_refused() -> None:
    with pytest.raises(ConfigError, match="multiple of 32.*got 100"):
        create_detector(["dent"], image_size=100)


def test_a_long_thin_box_still_gets_an_anchor_to_learn_from(detector) -> None:
    """A scratch across the image overlaps no anchor by IoU 0.5; it must still be matched."""
    boxes = np.array([[[2, 44, 94, 50], [0, 0, 0, 0]]], np.float32)  # 92 x 6 px, then padding
    labels = np.array([[1, -1]], np.float32)
    images = np.zeros((1, 96, 96, 3), np.float32)
    _, classes = detector.label_encoder(images=images, gt_boxes=boxes, gt_classes=labels)
    assert (np.asarray(classes) == 1).sum() >= 1


def test_wider_aspect_ratios_give_thin_boxes_an_anchor(detector) -> None:
    """Anchor coverage per class, as training reports it: KerasHub's ratios (0.5-2) match no
    anchor to a 6:1 scratch at IoU 0.5; ratios out to 5 do; a square box is covered by both."""
    boxes = np.array([[[10, 40, 70, 50], [30, 30, 62, 62], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[0, 1, -1]], np.float32)
    classes = ["scratch", "pit", "unused"]
    assert anchor_coverage(detector, boxes, labels, classes) == {"scratch": 0.0, "pit": 1.0}
    wide = create_detector(
        classes, image_size=96, head_convs=1, aspect_ratios=(0.2, 0.5, 1.0, 2.0, 5.0)
    )
    assert anchor_coverage(wide, boxes, labels, classes) == {"scratch": 1.0, "pit": 1.0}
    assert anchor_coverage(wide, boxes[:, 2:], labels[:, 2:], classes) == {}


@pytest.mark.parametrize("block", [5, 13])
def test_the_encoder_split_computes_the_same_pyramid(detector, block: int) -> None:
    """Cached part then tail gives the whole encoder's P4 and P5, with the encoder's layers."""
    import keras

    encoder = detector.backbone.image_encoder
    cached, tail = split_encoder(encoder, block)
    assert sorted(cached) == ["C" + str(block), "P3"]
    images = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    whole = keras.Model(encoder.inputs, encoder.pyramid_outputs)(images)
    front = keras.Model(encoder.inputs, cached)(images)
    back = tail(front[f"C{block}"])
    np.testing.assert_allclose(np.asarray(front["P3"]), np.asarray(whole["P3"]), atol=1e-5)
    for level in ("P4", "P5"):
        np.testing.assert_allclose(np.asarray(back[level]), np.asarray(whole[level]), atol=1e-4)
    shared = {id(w) for w in encoder.weights}
    assert tail.trainable_weights and all(id(w) in shared for w in tail.weights)
    assert not any("_bn" in w.path for w in tail.trainable_weights)  # BatchNorm stays frozen


def test_a_frozen_encoder_caches_its_whole_pyramid_and_bad_blocks_are_refused(detector) -> None:
    cached, tail = split_encoder(detector.backbone.image_encoder, 0)
    assert sorted(cached) == ["P3", "P4", "P5"] and tail is None
    for block in (4, 14, -1):
        with pytest.raises(ConfigError, match=f"got {block}"):
            split_encoder(detector.backbone.image_encoder, block)


def _suppressed(detector, boxes: list, logits: list) -> set[tuple[int, tuple]]:
    """``(label, box)`` of what the detector's decoder layer keeps of pixel boxes and logits."""
    decoded = detector.prediction_decoder(
        np.array([boxes], np.float32), np.array([logits], np.float32)
    )
    count = int(np.asarray(decoded["num_detections"])[0])
    labels = np.asarray(decoded["labels"])[0, :count].tolist()
    kept = np.asarray(decoded["boxes"])[0, :count].round(3).tolist()
    return {(label, tuple(box)) for label, box in zip(labels, kept, strict=True)}


LOW = -10.0  # a logit far below the decoder's confidence threshold


def test_suppression_works_within_each_class(detector) -> None:
    """A box drops a weaker one of its class; another class in the same place stays, and one
    anchor confident of two classes gives a box for each."""
    boxes = [[10, 10, 50, 50], [12, 10, 52, 50], [10, 10, 50, 50], [60, 60, 90, 90]]
    logits = [[3.0, LOW, LOW], [2.0, LOW, LOW], [LOW, 1.0, LOW], [0.5, LOW, 0.5]]
    assert _suppressed(detector, boxes, logits) == {
        (0, (10.0, 10.0, 50.0, 50.0)),
        (1, (10.0, 10.0, 50.0, 50.0)),
        (0, (60.0, 60.0, 90.0, 90.0)),
        (2, (60.0, 60.0, 90.0, 90.0)),
    }


def test_the_nms_threshold_is_kept_when_the_detector_is_saved(detector, tmp_path) -> None:
    """Two boxes of a class at IoU 0.45 both stay under threshold 0.5, one under 0.4; the
    threshold set travels with the saved detector (safe-mode load)."""
    import keras

    boxes, logits = [[0, 0, 40, 40], [0, 15, 40, 55]], [[2.0, LOW, LOW], [1.0, LOW, LOW]]
    assert len(_suppressed(detector, boxes, logits)) == 2
    try:
        set_nms_iou(detector, 0.4)
        assert _suppressed(detector, boxes, logits) == {(0, (0.0, 0.0, 40.0, 40.0))}
        detector.save(tmp_path / "detector.keras")
    finally:
        set_nms_iou(detector, 0.5)
    register_detector_layers()
    loaded = keras.saving.load_model(tmp_path / "detector.keras")
    assert type(loaded.prediction_decoder) is type(detector.prediction_decoder)
    assert loaded.prediction_decoder.iou_threshold == 0.4
    for bad in (0.0, 1.5, "0.4"):
        with pytest.raises(ConfigError, match=f"got {bad!r}"):
            set_nms_iou(detector, bad)
