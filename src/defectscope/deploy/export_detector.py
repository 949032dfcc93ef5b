"""Export of a detector: its raw network (box regression and class logits) to ONNX, TFLite or
a SavedModel; KerasHub's decoder (anchors, non-max suppression) turns the outputs into boxes
at load time (:class:`~defectscope.inference.detector.Detector`). Parity is COCO mAP@0.5 of
the export against the Keras detector on one split."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from defectscope.core.errors import ExportError
from defectscope.data.detection import records_for
from defectscope.data.pipeline import open_source
from defectscope.evaluation.detection import coco_metrics
from defectscope.evaluation.evaluate_detector import detect_source
from defectscope.inference.detector import Detector
from defectscope.inference.model_files import ModelLocation

MAX_MAP_LOSS = 0.005  # an export may lose at most 0.5 points of mAP@0.5
DETECTOR_FORMATS = ("savedmodel", "tflite", "onnx")
log = logging.getLogger("defectscope.export")


def check_detector_format(fmt: str) -> None:
    if fmt not in DETECTOR_FORMATS:
        raise ExportError(
            f"a detector exports to {', '.join(DETECTOR_FORMATS)}; got {fmt!r} (int8 of a "
            "detector is not offered: its mAP parity has not been measured)"
        )


def detector_parity(
    location: ModelLocation, artefact: Path, fmt: str, metadata: dict, data: str, split: str
) -> dict:
    """mAP@0.5 (and mAP@0.5:0.95) of the Keras detector and of its export on ``split``."""
    reference = Detector(location, metadata)
    candidate = Detector(ModelLocation(artefact, fmt, location.metadata_path), metadata)
    with tempfile.TemporaryDirectory(prefix="defectscope-records-") as scratch:
        source = open_source(records_for(data, Path(scratch) / "records"), split)
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
        raise ExportError(f"{fmt}: mAP@0.5 differs from the Keras detector's by {loss:+.4f}")
    return {"parity": figures, "validation_map50": figures["export_map50"]}
