"""Detection metrics with pycocotools: mAP@0.5, mAP@0.5:0.95, per-class AP, PR curves, and a
detection confusion matrix with a background row and column (as Ultralytics draws it).

Boxes are pixel ``xyxy`` corners; ground truth per image is ``(boxes, labels)``, detections
``(boxes, labels, scores)``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from defectscope.models.detector import DEFAULT_BOX_CONFIDENCE


@dataclass
class ImageBoxes:
    """The boxes of one image: ``xyxy`` pixels, class indices and (for detections) scores."""

    boxes: np.ndarray  # (N, 4)
    labels: np.ndarray  # (N,)
    scores: np.ndarray | None = None  # (N,)


def _coco(truths: list[ImageBoxes], found: list[ImageBoxes], classes: list[str], size: int):
    from pycocotools.coco import COCO

    images = [{"id": i, "width": size, "height": size} for i in range(len(truths))]
    categories = [{"id": c, "name": name} for c, name in enumerate(classes)]
    annotations, detections = [], []
    for image_id, (truth, pred) in enumerate(zip(truths, found, strict=True)):
        for box, label in zip(truth.boxes, truth.labels, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(pred.boxes, pred.labels, pred.scores, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    truth_set = COCO()
    truth_set.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        truth_set.createIndex()
        found_set = truth_set.loadRes(detections) if detections else None
    return truth_set, found_set


def _evaluate(truth_set, found_set, iou_thresholds=None):
    """A run pycocotools ``COCOeval`` (bbox), at its IoU thresholds unless others are given.
    Its largest detection count (COCO's 100) is raised to the most boxes found in one image,
    so a detector that keeps more per image is scored on all of them."""
    from pycocotools.cocoeval import COCOeval

    evaluation = COCOeval(truth_set, found_set, iouType="bbox")
    if iou_thresholds is not None:
        evaluation.params.iouThrs = np.asarray(iou_thresholds, float)
    most = max((len(boxes) for boxes in found_set.imgToAnns.values()), default=0)
    evaluation.params.maxDets = [1, 10, max(100, most)]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation


def _mean_ap(precision: np.ndarray) -> float:
    """The mean of a COCOeval precision slice over its filled cells (-1: no true box), as
    ``COCOeval.summarize`` averages; its own summary counts 100 boxes per image at most."""
    filled = precision[precision > -1]
    return float(filled.mean()) if filled.size else -1.0


def coco_metrics(
    truths: list[ImageBoxes], found: list[ImageBoxes], classes: list[str], size: int
) -> dict:
    """``map50``, ``map50_95``, ``per_class_ap50`` and the PR curve at IoU 0.5 per class."""
    truth_set, found_set = _coco(truths, found, classes, size)
    empty = {"map50": 0.0, "map50_95": 0.0, "per_class_ap50": dict.fromkeys(classes, 0.0)}
    if found_set is None:
        return {**empty, "pr_curves": {}}
    evaluation = _evaluate(truth_set, found_set)
    precision = evaluation.eval["precision"][..., 0, -1]  # (iou, recall, class); all areas
    per_class, curves = {}, {}
    for index, name in enumerate(classes):
        column = precision[0, :, index]  # IoU 0.5
        valid = column > -1
        per_class[name] = float(column[valid].mean()) if valid.any() else float("nan")
        curves[name] = np.where(valid, column, 0.0).tolist()
    return {
        "map50": _mean_ap(precision[0]),
        "map50_95": _mean_ap(precision),
        "per_class_ap50": per_class,
        "pr_curves": {"recall": evaluation.params.recThrs.tolist(), "precision": curves},
    }


LOOSE_IOUS = (0.1, 0.3, 0.5)


def where_ap_goes(
    truths: list[ImageBoxes], found: list[ImageBoxes], classes: list[str], size: int
) -> dict:
    """Where mAP@0.5 is lost: ``map_at_iou`` (mAP at IoU 0.1, 0.3, 0.5: what a looser overlap
    gains is the boxes' extent) and ``map50_one_class`` (every box in one class: what that
    gains is the class)."""

    def mean_ap(truth_set, found_set) -> np.ndarray:
        if found_set is None:
            return np.zeros(len(LOOSE_IOUS))
        precision = _evaluate(truth_set, found_set, LOOSE_IOUS).eval["precision"][..., 0, -1]
        # per IoU; an IoU row without any true box (all -1) counts 0
        return np.array([max(_mean_ap(row), 0.0) for row in precision])

    def one_class(boxes: list[ImageBoxes]) -> list[ImageBoxes]:
        return [ImageBoxes(b.boxes, np.zeros_like(b.labels), b.scores) for b in boxes]

    per_class = mean_ap(*_coco(truths, found, classes, size))
    merged = mean_ap(*_coco(one_class(truths), one_class(found), ["defect"], size))
    return {
        "map_at_iou": {
            f"{iou:.2f}": float(v) for iou, v in zip(LOOSE_IOUS, per_class, strict=True)
        },
        "map50_one_class": float(merged[-1]),
    }


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def confusion(
    truths: list[ImageBoxes],
    found: list[ImageBoxes],
    num_classes: int,
    iou: float = 0.5,
    confidence: float = DEFAULT_BOX_CONFIDENCE,
) -> np.ndarray:
    """``(C+1, C+1)`` counts, rows = predicted, columns = true, last = background: a detection
    matched (IoU >= ``iou``, best first) to a true box counts at (its class, the box's class),
    an unmatched one at (its class, background), a missed true box at (background, its class)."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for truth, pred in zip(truths, found, strict=True):
        keep = pred.scores >= confidence
        boxes, labels = pred.boxes[keep], pred.labels[keep]
        order = np.argsort(-pred.scores[keep])
        unmatched = np.ones(len(truth.labels), bool)
        for index in order:
            overlaps = _iou(boxes[index], truth.boxes) if len(truth.boxes) else np.zeros(0)
            overlaps[~unmatched] = 0.0
            best = int(np.argmax(overlaps)) if len(overlaps) else -1
            if best >= 0 and overlaps[best] >= iou:
                unmatched[best] = False
                matrix[int(labels[index]), int(truth.labels[best])] += 1
            else:
                matrix[int(labels[index]), num_classes] += 1
        for label in truth.labels[unmatched]:
            matrix[num_classes, int(label)] += 1
    return matrix


# the least confidence of a box drawn, listed and served unless the user asks for another is
# chosen after training among these (best F1 on the selection set)
BOX_CONFIDENCE_CANDIDATES = tuple(round(0.05 * step, 2) for step in range(1, 19))  # 0.05-0.9


def box_f1(
    truths: list[ImageBoxes], found: list[ImageBoxes], num_classes: int, confidence: float
) -> dict:
    """Precision, recall and F1 of the boxes at least ``confidence`` confident: a box is right
    when it overlaps a true box of its class at IoU >= 0.5 (matched as :func:`confusion` does)."""
    matrix = confusion(truths, found, num_classes, confidence=confidence)
    right = float(np.trace(matrix[:num_classes, :num_classes]))
    predicted, true = int(matrix[:num_classes].sum()), int(matrix[:, :num_classes].sum())
    precision = right / predicted if predicted else 0.0
    recall = right / true if true else 0.0
    total = precision + recall
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / total if total else 0.0,
    }


def choose_box_confidence(
    truths: list[ImageBoxes], found: list[ImageBoxes], num_classes: int
) -> tuple[float, dict[str, float]]:
    """The candidate confidence with the best F1, and each candidate's F1; a tie (or no true
    box at all) keeps the one nearest :data:`DEFAULT_BOX_CONFIDENCE`."""
    scores = {c: box_f1(truths, found, num_classes, c)["f1"] for c in BOX_CONFIDENCE_CANDIDATES}
    chosen = max(scores, key=lambda c: (scores[c], -abs(c - DEFAULT_BOX_CONFIDENCE)))
    return chosen, {f"{c:.2f}": f1 for c, f1 in scores.items()}
