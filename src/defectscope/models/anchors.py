"""Anchors of the RetinaNet detector: KerasHub's generator, how many true boxes they match, and
the anchor size that matches a dataset's boxes best (``detect.anchor_size: auto``)."""

from __future__ import annotations

BOX_FORMAT = "xyxy"  # pixel corners of the model's square input
AUTO_ANCHOR_SIZE = "auto"  # detect.anchor_size chosen by choose_anchor_size on the training boxes


def create_anchor_generator(max_level: int, anchor_size: float, aspect_ratios):
    """KerasHub's anchor generator: P3 to P``max_level``, three scales per level."""
    from keras_hub.src.layers.modeling.anchor_generator import AnchorGenerator

    return AnchorGenerator(
        BOX_FORMAT,
        min_level=3,
        max_level=max_level,
        num_scales=3,
        aspect_ratios=[float(ratio) for ratio in aspect_ratios],
        anchor_size=float(anchor_size),
    )


def anchor_settings(detector) -> dict:
    """The arguments of ``detector``'s anchor generator, to rebuild it (the CIoU box loss)."""
    return {
        key: value
        for key, value in detector.anchor_generator.get_config().items()
        if key not in ("name", "trainable", "dtype")
    }


BOXES_PER_CHUNK = 256  # true boxes compared with every anchor at once (memory: 256 x anchors)


def anchor_boxes(anchors, image_size: int):
    """Every anchor of a square input (pixel ``xyxy``), P3 first: the order of the detector's
    raw outputs."""
    import numpy as np

    levels = anchors(np.zeros((image_size, image_size, 3), np.float32))
    return np.concatenate([np.asarray(level) for level in levels.values()])


def _best_anchor_iou(anchors, image_size: int, boxes):
    """For each box (pixel ``xyxy``), its IoU with the best-overlapping anchor."""
    import numpy as np
    from keras.utils import bounding_boxes

    all_anchors = anchor_boxes(anchors, image_size)
    best = [np.zeros((0,), np.float32)]
    for start in range(0, len(boxes), BOXES_PER_CHUNK):
        chunk = boxes[start : start + BOXES_PER_CHUNK]
        best.append(np.asarray(bounding_boxes.compute_iou(chunk, all_anchors, BOX_FORMAT)).max(1))
    return np.concatenate(best)


def box_coverage(anchors, image_size: int, boxes, labels, classes: list[str], threshold=0.5):
    """Per class, the share of true boxes (pixel ``xyxy`` of the model input; label -1 pads)
    whose best anchor overlaps them at IoU >= ``threshold``, the label encoder's match rule.
    A low share means the anchors do not fit that class's box shapes."""
    import numpy as np

    flat_boxes, flat_labels = np.reshape(boxes, (-1, 4)), np.reshape(labels, (-1,))
    real = flat_labels >= 0
    flat_boxes, flat_labels = flat_boxes[real].astype(np.float32), flat_labels[real].astype(int)
    if not len(flat_boxes):
        return {}
    best = _best_anchor_iou(anchors, image_size, flat_boxes)
    return {
        name: float(np.mean(best[flat_labels == index] >= threshold))
        for index, name in enumerate(classes)
        if (flat_labels == index).any()
    }


def anchor_coverage(detector, boxes, labels, classes: list[str], threshold: float = 0.5) -> dict:
    """:func:`box_coverage` of ``detector``'s anchors at its input size."""
    size = detector.backbone.image_encoder.image_size
    return box_coverage(detector.anchor_generator, size, boxes, labels, classes, threshold)


# anchor sizes tried by :func:`choose_anchor_size`: 1 to 16 (P3's anchors 8 to 128 px), eight
# per octave; P3 to P7 repeat each octave, so the small steps matter, the ends for the extremes
ANCHOR_SIZES = tuple(2 ** (step / 8) for step in range(33))
MAX_BOXES_PER_CLASS = 500  # boxes per class that choose the anchor size (a seeded sample)


def _class_sample(labels, classes: list[str], seed: int = 0):
    """Row indices of at most :data:`MAX_BOXES_PER_CLASS` boxes of each class."""
    import numpy as np

    generator = np.random.default_rng(seed)
    rows = []
    for index in range(len(classes)):
        members = np.flatnonzero(labels == index)
        if len(members) > MAX_BOXES_PER_CLASS:
            members = generator.choice(members, MAX_BOXES_PER_CLASS, replace=False)
        rows.append(members)
    return np.sort(np.concatenate(rows)) if rows else np.zeros((0,), int)


def choose_anchor_size(
    boxes, labels, classes: list[str], image_size: int, max_level: int, aspect_ratios
) -> tuple[float, dict]:
    """The anchor size (of :data:`ANCHOR_SIZES`) whose anchors match the largest share of the
    worst-matched class's true boxes (pixel ``xyxy``), then of all classes on average, then the
    nearest to 4 (KerasHub's); returns it with its :func:`box_coverage`."""
    import math

    import numpy as np

    rows = _class_sample(np.asarray(labels), classes)
    boxes, labels = np.asarray(boxes)[rows], np.asarray(labels)[rows]
    best, best_key, best_coverage = 4.0, None, {}
    for size in ANCHOR_SIZES:
        anchors = create_anchor_generator(max_level, size, aspect_ratios)
        coverage = box_coverage(anchors, image_size, boxes, labels, classes)
        if not coverage:
            break
        shares = list(coverage.values())
        key = (min(shares), sum(shares) / len(shares), -abs(math.log2(size / 4.0)))
        if best_key is None or key > best_key:
            best, best_key, best_coverage = size, key, coverage
    return best, best_coverage
