"""Export of a detector: its raw network (box regression and class logits) to ONNX, TFLite or
a SavedModel, in float or int8; KerasHub's decoder (anchors, non-max suppression) turns the
outputs into boxes at load time (:class:`~defectscope.inference.detector.Detector`). Parity is
COCO mAP@0.5 of the export against the Keras detector on one split, for float and int8 alike."""

from __future__ import annotations

import logging
from pathlib import Path

from defectscope.core.errors import ExportError
from defectscope.data.detection import create_detection_dataset, records_for
from defectscope.data.pipeline import open_source
from defectscope.evaluation.detection import coco_metrics
from defectscope.evaluation.evaluate_detector import detect_source
from defectscope.inference.detector import Detector
from defectscope.inference.model_files import ModelLocation

MAX_MAP_LOSS = 0.005  # an export may lose at most 0.5 points of mAP@0.5
log = logging.getLogger("defectscope.export")


def detector_records(data: str, scratch: Path) -> str:
    """The TFRecords that calibrate and check a detector export: ``data`` itself, or its
    conversion into ``scratch`` (once, for both)."""
    return str(records_for(data, scratch / "records"))


def detector_calibration(records: str, image_size: int, count: int, seed: int = 0):
    """Up to ``count`` un-augmented training images, shuffled, one at a time (float32)."""
    source = open_source(records, "train")
    dataset = create_detection_dataset(source, image_size, batch_size=1, shuffle=True, seed=seed)
    for images, _, _ in dataset.take(count):
        yield images.numpy()


def detector_parity(
    location: ModelLocation, artefact: Path, fmt: str, metadata: dict, records: str, split: str
) -> dict:
    """mAP@0.5 (and mAP@0.5:0.95) of the Keras detector and of its export on ``split`` of the
    TFRecords ``records``; an export (float or int8) that moves mAP@0.5 by more than
    :data:`MAX_MAP_LOSS` raises ExportError."""
    reference = Detector(location, metadata)
    kind = fmt.removesuffix("-int8")
    candidate = Detector(ModelLocation(artefact, kind, location.metadata_path), metadata)
    source = open_source(records, split)
    figures = {}
    for name, detector in (("keras", reference), ("export", candidate)):
        truths, found, _ = detect_source(detector, source)
        metrics = coco_metrics(truths, found, detector.classes, detector.image_size)
        figures[f"{name}_map50"] = metrics["map50"]
        figures[f"{name}_map50_95"] = metrics["map50_95"]
    figures.update(split=split, num_images=len(truths))
    loss = figures["keras_map50"] - figures["export_map50"]
    log.info(
        "%s parity on %d %s images: mAP@0.5 %.4f (keras %.4f)",
        fmt,
        len(truths),
        split,
        figures["export_map50"],
        figures["keras_map50"],
    )
    if abs(loss) > MAX_MAP_LOSS:
        hint = f" ({fmt.removesuffix('-int8')} keeps it)" if fmt.endswith("int8") else ""
        raise ExportError(
            f"{fmt}: mAP@0.5 {figures['export_map50']:.4f} against the Keras detector's "
            f"{figures['keras_map50']:.4f} on {split}: {-loss:+.4f}, beyond the "
            f"{MAX_MAP_LOSS:.3f} an export may move it; nothing was written{hint}"
        )
    return {"parity": figures, "validation_map50": figures["export_map50"]}
