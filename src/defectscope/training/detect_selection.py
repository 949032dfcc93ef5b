"""A detector's heads scored on the cached selection set: raw outputs, KerasHub's decoder,
COCO metrics, and the same with test-time flips (:mod:`~defectscope.inference.flips`)."""

from __future__ import annotations

import numpy as np

from defectscope.evaluation.detection import ImageBoxes, choose_box_confidence, coco_metrics
from defectscope.inference.flips import PLAIN, TTA_FLIPS, FlipAverage
from defectscope.models.anchors import anchor_boxes
from defectscope.models.detector import per_image
from defectscope.training.pyramid_cache import PyramidCache


def decode(decoder, raw: dict, size: int) -> list[ImageBoxes]:
    """A compiled KerasHub decoder (anchors, box deltas, non-max suppression) on raw outputs."""
    count = int(np.asarray(raw["cls_logits"]).shape[0])
    images = np.zeros((count, size, size, 3), np.float32)
    return [ImageBoxes(*found) for found in per_image(decoder(raw, images))]


def truths(cache: PyramidCache) -> list[ImageBoxes]:
    rows = range(cache.count)
    return true_boxes(cache.boxes(rows), cache.labels(rows))


def true_boxes(boxes, labels) -> list[ImageBoxes]:
    """Padded ``(N, rows, 4)`` boxes and ``(N, rows)`` labels -> each image's real boxes."""
    found = []
    for image_boxes, image_labels in zip(np.asarray(boxes), np.asarray(labels), strict=True):
        real = image_labels >= 0
        found.append(ImageBoxes(image_boxes[real], image_labels[real].astype(int)))
    return found


def raw_outputs(trainer, cache: PyramidCache, batch_size: int = 32) -> list[dict]:
    """The heads' raw outputs on every cached image, in batches."""
    found = []
    for start in range(0, cache.count, batch_size):
        features = cache.features(range(start, min(start + batch_size, cache.count)))
        found.append({k: np.asarray(v) for k, v in trainer(features, training=False).items()})
    return found


def decoded_map(decoder, raws: list[dict], cache: PyramidCache, classes: list[str], size: int):
    """COCO metrics of raw outputs decoded by ``decoder`` against the cache's true boxes."""
    found = [boxes for raw in raws for boxes in decode(decoder, raw, size)]
    return coco_metrics(truths(cache), found, classes, size)


def selection_map(trainer, decoder, cache: PyramidCache, classes: list[str], size: int) -> dict:
    """mAP of the current heads on the (cached) selection set."""
    return decoded_map(decoder, raw_outputs(trainer, cache), cache, classes, size)


def measure_flips(
    detector, trainer, decoder, selection: PyramidCache, mirrored: dict, plain: list[dict]
) -> dict:
    """Selection mAP, and the box confidence to show boxes from (best F1), when the outputs
    are averaged over the image and its mirror images: ``plain`` holds the heads' raw outputs
    on ``selection``, ``mirrored`` the caches of its mirrored copies by :data:`TTA_FLIPS` name."""
    size = int(detector.backbone.image_encoder.image_size)
    flips = FlipAverage(anchor_boxes(detector.anchor_generator, size), size)
    views = {name: raw_outputs(trainer, mirrored[name]) for name in TTA_FLIPS}
    averaged = [
        flips.average({PLAIN: batch, **{name: found[i] for name, found in views.items()}})
        for i, batch in enumerate(plain)
    ]
    found = [boxes for raw in averaged for boxes in decode(decoder, raw, size)]
    true_boxes = truths(selection)
    names = [str(index) for index in range(detector.num_classes)]  # mAP needs no class names
    metrics = coco_metrics(true_boxes, found, names, size)
    confidence, f1 = choose_box_confidence(true_boxes, found, detector.num_classes)
    return {
        "flips": list(TTA_FLIPS),
        "selection_map50": metrics["map50"],
        "selection_map50_95": metrics["map50_95"],
        "box_confidence": confidence,
        "box_confidence_selection_f1": f1,
    }
