"""Test-time flips of a detector (``tta``): its raw outputs on the image and on the image's
mirror images, put back onto the original's anchors and averaged before the detector's own
non-max suppression.

The output of a mirror image at an anchor belongs to the original's mirrored anchor: its class
probabilities carry over, and the box's centre offset along the mirrored axis changes sign
(KerasHub's ``center_xywh`` box coding, in which the detector is built). KerasHub's anchors
sit on the corners of their cells, so the first row and column of a level (and a level whose
stride does not divide the input) have no mirror: those anchors are averaged over the views
that have them.
"""

from __future__ import annotations

import numpy as np

PLAIN = "none"
# view name -> (rows reversed, columns reversed); the names of data.detection's mirrored copies
TTA_FLIPS = {"horizontal": (False, True), "vertical": (True, False)}
BOX_OUTPUT, CLASS_OUTPUT = "bbox_regression", "cls_logits"


def mirror_anchors(anchors: np.ndarray, image_size: int, rows: bool, columns: bool) -> np.ndarray:
    """For each anchor (pixel ``xyxy``), the index of its mirror image (rows reversed, columns
    reversed, or both), or -1 when no anchor is there."""
    mirrored = np.array(anchors, dtype=np.float64)
    if columns:
        mirrored[:, [0, 2]] = image_size - mirrored[:, [2, 0]]
    if rows:
        mirrored[:, [1, 3]] = image_size - mirrored[:, [3, 1]]
    index = {tuple(box): i for i, box in enumerate(np.round(anchors, 3).tolist())}
    return np.array([index.get(tuple(box), -1) for box in np.round(mirrored, 3).tolist()])


def flip_images(images: np.ndarray, rows: bool, columns: bool) -> np.ndarray:
    """A batch ``(N, H, W, C)`` with its rows and/or columns reversed."""
    flipped = images[:, ::-1] if rows else images
    flipped = flipped[:, :, ::-1] if columns else flipped
    return np.ascontiguousarray(flipped)


def _log_probabilities(logits) -> tuple[np.ndarray, np.ndarray]:
    """``(log p, log (1 - p))`` of sigmoid logits, without overflow."""
    logits = np.asarray(logits, np.float64)
    return -np.logaddexp(0.0, -logits), -np.logaddexp(0.0, logits)


class FlipAverage:
    """A detector's raw outputs averaged over the plain image and its :data:`TTA_FLIPS`."""

    def __init__(self, anchors: np.ndarray, image_size: int) -> None:
        self.mirrors = {
            name: mirror_anchors(anchors, image_size, rows, columns)
            for name, (rows, columns) in TTA_FLIPS.items()
        }

    def views(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The batch as each view sees it: plain, then mirrored."""
        flipped = {name: flip_images(images, *axes) for name, axes in TTA_FLIPS.items()}
        return {PLAIN: np.asarray(images), **flipped}

    def to_plain(self, name: str, outputs: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One mirrored view's raw outputs on the plain image's anchors: ``(box offsets,
        class logits, kept)``, the values of the anchors where ``kept`` is true."""
        rows, columns = TTA_FLIPS[name]
        mirror = self.mirrors[name]
        kept = mirror >= 0
        boxes = np.array(outputs[BOX_OUTPUT], np.float64)[:, mirror[kept]]
        boxes[..., 0] *= -1 if columns else 1  # the centre offset along a mirrored axis
        boxes[..., 1] *= -1 if rows else 1
        return boxes, np.asarray(outputs[CLASS_OUTPUT])[:, mirror[kept]], kept

    def average(self, outputs: dict[str, dict]) -> dict[str, np.ndarray]:
        """Raw outputs ``{view: {"bbox_regression", "cls_logits"}}`` of one batch, as one set
        on the plain image's anchors: box offsets and class probabilities averaged anchor by
        anchor, the probabilities returned as logits."""
        boxes = np.array(outputs[PLAIN][BOX_OUTPUT], np.float64)
        positive, negative = _log_probabilities(outputs[PLAIN][CLASS_OUTPUT])  # summed in logs
        counts = np.ones(boxes.shape[1])
        for name in TTA_FLIPS:
            view_boxes, view_logits, kept = self.to_plain(name, outputs[name])
            view_positive, view_negative = _log_probabilities(view_logits)
            boxes[:, kept] += view_boxes
            positive[:, kept] = np.logaddexp(positive[:, kept], view_positive)
            negative[:, kept] = np.logaddexp(negative[:, kept], view_negative)
            counts[kept] += 1
        return {  # logit(mean p) = log(sum p) - log(sum (1 - p)): the counts cancel
            BOX_OUTPUT: (boxes / counts[None, :, None]).astype(np.float32),
            CLASS_OUTPUT: (positive - negative).astype(np.float32),
        }
