"""After training: the operating point (defect or OK) and the "unknown" threshold, both chosen
on the selection set and written into the model's metadata.json, where predict, serve and the
exports read them."""

from __future__ import annotations

import json
import logging

import numpy as np

from defectscope.core.atomic_io import atomic_write_json
from defectscope.evaluation.metrics import predict_source
from defectscope.evaluation.ood import threshold_at
from defectscope.evaluation.operating_point import (
    choose_threshold,
    defect_scores,
    find_ok_class,
    rates,
)
from defectscope.inference.classifier import Classifier
from defectscope.inference.model_files import METADATA_NAME
from defectscope.inference.scores import unknown_scores
from defectscope.training.config import TrainConfig
from defectscope.training.run_folder import RunFolder
from defectscope.training.sources import RunSources

log = logging.getLogger("defectscope.train")


def operating_point(config: TrainConfig, classes: list[str], labels, probabilities, chosen_on):
    """The defect threshold that meets ``max_escape_rate`` on these images (None: no OK class)."""
    ok = find_ok_class(classes, config.ok_class)
    if ok is None:
        return None
    ok_index = classes.index(ok)
    scores = defect_scores(probabilities, ok_index)
    is_defect = np.asarray(labels) != ok_index
    if not is_defect.any() or is_defect.all():
        log.warning("the selection set lacks OK or defective images: no operating point")
        return None
    threshold = choose_threshold(scores, is_defect, config.max_escape_rate)
    found = rates(scores, is_defect, threshold)
    log.info(
        "operating point (OK class %r): defect when 1 - P(%s) >= %.4f; on %s: escapes %.2f%%, "
        "false rejects %.2f%%",
        ok,
        ok,
        threshold,
        chosen_on,
        100 * found["escape_rate"],
        100 * found["false_reject_rate"],
    )
    return {
        "ok_class": ok,
        "threshold": threshold,
        "max_escape_rate": config.max_escape_rate,
        "chosen_on": chosen_on,
        "selection": found,
    }


def unknown_threshold(config: TrainConfig, result, chosen_on: str) -> dict:
    """The score above which an image is answered "unknown": ``unknown_keep`` of the selection
    images stay below it. The energy of the logits (measured to separate other steel, blur,
    noise and non-steel images from NEU-DET better than 1 - max probability or a Mahalanobis
    distance: docs/own-data.md), or 1 - max probability for a model without logits."""
    kind = "energy" if result.logits is not None else "msp"
    scores = unknown_scores(kind, result.probabilities, result.logits)
    threshold = threshold_at(scores, config.unknown_keep)
    log.info(
        "unknown: %s score above %.4f (keeps %.0f%% of %s)",
        kind,
        threshold,
        100 * config.unknown_keep,
        chosen_on,
    )
    return {
        "score": kind,
        "threshold": threshold,
        "keep": config.unknown_keep,
        "chosen_on": chosen_on,
    }


def calibrate(
    run: RunFolder, config: TrainConfig, sources: RunSources, classifier: Classifier
) -> dict:
    """Choose both thresholds on the selection set and store them with the best model."""
    result = predict_source(classifier, sources.selection)
    chosen_on = sources.describe()["selected_on"]
    metadata_path = run.weights_dir / METADATA_NAME
    metadata = json.loads(metadata_path.read_text())
    metadata["unknown"] = unknown_threshold(config, result, chosen_on)
    point = operating_point(
        config, classifier.classes, result.labels, result.probabilities, chosen_on
    )
    if point is not None:
        metadata["operating_point"] = point
    atomic_write_json(metadata_path, metadata)
    return metadata
