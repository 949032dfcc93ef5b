"""``evaluate`` of a detector: COCO metrics (pycocotools), PR curves, a detection confusion
matrix with a background row and column, and a grid of images with true and found boxes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from defectscope.core.atomic_io import atomic_path, atomic_write_json, atomic_write_text
from defectscope.core.files import prepare_output_folder
from defectscope.core.text import plural
from defectscope.data.detection import create_detection_dataset, records_for
from defectscope.data.discovery import BACKGROUND
from defectscope.data.pipeline import DataSource, open_source
from defectscope.evaluation.detection import (
    ImageBoxes,
    box_f1,
    coco_metrics,
    confusion,
    where_ap_goes,
)
from defectscope.evaluation.evaluate import check_data_classes
from defectscope.evaluation.report import _pyplot, _save, is_evaluation_file
from defectscope.inference.detector import (
    FOUND_COLOR,
    TRUE_COLOR,
    Detector,
    check_tta_fits,
    draw_labelled_boxes,
    load_detector,
    selection_choices,
)
from defectscope.models.detector import DEFAULT_BOX_CONFIDENCE

GRID_IMAGES = 12
DETECTION_FILES = frozenset({"pr_curves.png", "predictions.png"})


def _is_output(path: Path) -> bool:
    return is_evaluation_file(path) or path.name in DETECTION_FILES


def detect_source(detector: Detector, source: DataSource, batch_size: int = 16):
    """Truths and detections of every image of a split (at the detector's input), and a few
    images for the picture."""
    truths, found, pictures = [], [], []
    dataset = create_detection_dataset(source, detector.image_size, batch_size)
    for images, target, _ in dataset:
        images = images.numpy()
        for boxes, labels in zip(target["boxes"].numpy(), target["labels"].numpy(), strict=True):
            real = labels >= 0
            truths.append(ImageBoxes(boxes[real], labels[real].astype(int)))
        for raw in detector.detect_arrays(images):
            found.append(ImageBoxes(raw.boxes, raw.labels, raw.scores))
        for image in images[: max(0, GRID_IMAGES - len(pictures))]:
            pictures.append(image.astype(np.uint8))
    return truths, found, pictures


def plot_pr_curves(metrics: dict, path: Path) -> None:
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7, 5))
    recall = metrics["pr_curves"].get("recall", [])
    for name, precision in metrics["pr_curves"].get("precision", {}).items():
        ap = metrics["per_class_ap50"][name]
        ax.plot(recall, precision, label=f"{name} (AP@0.5 {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall at IoU 0.5, mAP@0.5 {metrics['map50']:.3f}")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:  # no box found in any image: every AP is 0, and there is no curve to draw
        ax.text(0.5, 0.5, "no boxes found: no curve", ha="center", va="center")
    _save(figure, path)


def plot_detection_confusion(
    matrix: np.ndarray, classes: list[str], path: Path, confidence: float
) -> None:
    plt = _pyplot()
    names = [*classes, "background"]
    size = 2.5 + 0.75 * len(names)
    figure, ax = plt.subplots(figsize=(size + 1, size))
    shown = matrix / np.maximum(matrix.sum(axis=0, keepdims=True), 1)
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if shown[i, j] > 0.5 else "black",
        )
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"detections (IoU >= 0.5, confidence >= {confidence:.2f})")
    _save(figure, path)


def draw_boxes(
    image: np.ndarray,
    truth: ImageBoxes | None,
    found: ImageBoxes,
    classes: list[str],
    confidence: float = DEFAULT_BOX_CONFIDENCE,
):
    """A Pillow image with true boxes in green and detections in red, labelled."""
    from PIL import Image

    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if truth is not None:
        draw_labelled_boxes(picture, truth.boxes, [""] * len(truth.boxes), TRUE_COLOR)
    kept = found.scores >= confidence
    labels, scores = found.labels[kept], found.scores[kept]
    texts = [f"{classes[k]} {v:.2f}" for k, v in zip(labels, scores, strict=True)]
    draw_labelled_boxes(picture, found.boxes[kept], texts, FOUND_COLOR)
    return picture


def plot_grid(pictures, truths, found, classes, path: Path, confidence: float) -> None:
    from PIL import Image

    tiles = [
        draw_boxes(p, t, f, classes, confidence)
        for p, t, f in zip(pictures, truths, found, strict=False)
    ]
    if not tiles:
        return
    size, columns = tiles[0].size[0], 4
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * size, rows * size), "white")
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * size, (index // columns) * size))
    with atomic_path(path) as temp:
        grid.save(temp, format="PNG")


def _flips_line(metrics: dict) -> str:
    """Whether the figures were measured with test-time flips, and what the selection set
    measured with them when the detector was trained."""
    used = "on" if metrics.get("test_time_flips") else "off (`--tta` turns them on)"
    line = f"- test-time flips (image, horizontal and vertical mirror averaged): {used}"
    measured = metrics.get("tta")
    if isinstance(measured, dict) and "selection_map50" in measured:
        line += f"; selection mAP@0.5 with them {measured['selection_map50']:.4f}"
    elif metrics.get("test_time_flips"):
        line += "; the box confidence was chosen without them (trained before they were measured)"
    return line


def _report(metrics: dict, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"- mAP@0.5: **{metrics['map50']:.4f}**, mAP@0.5:0.95: **{metrics['map50_95']:.4f}** "
        f"({plural(metrics['num_images'], 'image')}, "
        f"{plural(metrics['num_boxes'], 'true box', 'true boxes')})",
    ]
    if "measured_on" in metrics:
        lines.append(
            f"- measured on: {metrics['measured_on']}; chosen on: {metrics['selected_on']}"
        )
    if "nms_iou_selection_map50" in metrics:
        tried = ", ".join(f"{k}: {v:.4f}" for k, v in metrics["nms_iou_selection_map50"].items())
        lines.append(f"- NMS IoU {metrics['nms_iou']:.2f}, chosen on selection mAP@0.5 ({tried})")
    lines.append(_flips_line(metrics))
    how = "chosen on selection F1" if "box_confidence_selection_f1" in metrics else "default"
    lines.append(
        f"- boxes shown from confidence {metrics['box_confidence']:.2f} ({how}): precision "
        f"{metrics['precision']:.4f}, recall {metrics['recall']:.4f}, F1 {metrics['f1']:.4f} "
        "(IoU >= 0.5; the confusion matrix and the pictures use the same boxes)"
    )
    if "map_at_iou" in metrics:
        loose = " / ".join(f"{v:.4f}" for v in metrics["map_at_iou"].values())
        lines.append(
            f"- mAP at IoU {' / '.join(metrics['map_at_iou'])}: {loose}; every box in one class, "
            f"mAP@0.5 {metrics['map50_one_class']:.4f} (what a looser IoU gains is the boxes' "
            "extent, what one class gains is the class)"
        )
    lines += ["", "| class | AP@0.5 |", "| --- | ---: |"]
    lines += [f"| {name} | {ap:.4f} |" for name, ap in metrics["per_class_ap50"].items()]
    lines += [
        "",
        "![PR curves](pr_curves.png)",
        "",
        "![confusion](confusion_matrix.png)",
        "",
        "![predictions: true boxes green, found red](predictions.png)",
        "",
    ]
    return "\n".join(lines)


def _selection_f1(detector: Detector) -> dict:
    """The selection F1 per box confidence that chose :attr:`Detector.box_confidence`."""
    measured = selection_choices(detector.metadata, detector.tta)
    if "box_confidence_selection_f1" in measured:
        return {"box_confidence_selection_f1": measured["box_confidence_selection_f1"]}
    return {}


def check_detector_inputs(model, data, split: str, out, overwrite: bool = False) -> None:
    """What ``evaluate`` of a detector needs, checked without TensorFlow."""
    if not isinstance(model, Detector):  # images without boxes form the background class
        check_data_classes(model, data, split, ignored=frozenset({BACKGROUND}))
    prepare_output_folder(out, "evaluation files", _is_output, overwrite)


def evaluate_detector(
    model: str | Path | Detector,
    data: str | Path | DataSource,
    split: str = "validation",
    out: str | Path = "runs/evaluate",
    title: str | None = None,
    overwrite: bool = False,
    context: dict | None = None,
    tta: bool = False,
) -> dict:
    """Evaluate a detector on one split; writes metrics.json and the pictures into ``out``.
    ``tta``: a detector path is loaded with test-time flips (a loaded one keeps its own)."""
    check_tta_fits(model, tta)
    out = prepare_output_folder(out, "evaluation files", _is_output, overwrite)
    detector = model if isinstance(model, Detector) else load_detector(model, tta=tta)
    with tempfile.TemporaryDirectory(prefix="defectscope-records-") as scratch:
        if isinstance(data, DataSource):
            source = data
        else:  # a dataset root is converted for the while (TFRecords hold the boxes)
            source = open_source(records_for(data, Path(scratch) / "records"), split)
        truths, found, pictures = detect_source(detector, source)
    metrics = coco_metrics(truths, found, detector.classes, detector.image_size)
    shown = detector.box_confidence  # the boxes predict and serve show by default
    matrix = confusion(truths, found, len(detector.classes), confidence=shown)
    at_shown = box_f1(truths, found, len(detector.classes), shown)
    curves = metrics.pop("pr_curves")
    metrics = {
        "task": "detect",
        **metrics,
        "num_images": len(truths),
        "num_boxes": int(sum(len(t.labels) for t in truths)),
        "classes": list(detector.classes),
        "box_confidence": shown,
        **_selection_f1(detector),
        "test_time_flips": detector.tta,
        **{k: v for k, v in detector.metadata.items() if k == "tta" and isinstance(v, dict)},
        "precision": at_shown["precision"],
        "recall": at_shown["recall"],
        "f1": at_shown["f1"],
        **where_ap_goes(truths, found, detector.classes, detector.image_size),
        "confusion_matrix": matrix.tolist(),
        **(context or {}),
    }
    atomic_write_json(out / "metrics.json", metrics)
    plot_pr_curves({**metrics, "pr_curves": curves}, out / "pr_curves.png")
    plot_detection_confusion(matrix, detector.classes, out / "confusion_matrix.png", shown)
    plot_grid(pictures, truths, found, detector.classes, out / "predictions.png", shown)
    title = title or f"{detector.path} on {source.path} ({source.split})"
    atomic_write_text(out / "report.md", _report(metrics, title))
    return metrics
