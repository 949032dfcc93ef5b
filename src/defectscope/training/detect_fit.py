"""Detector settings fitted to the training boxes before training: how many boxes an image may
keep, the anchor size (``detect.anchor_size: auto``), how many boxes the anchors match, and
which augmented copies of the fit images are cached."""

from __future__ import annotations

import dataclasses
import logging

from defectscope.data.detection import box_table, crop_copy, most_boxes
from defectscope.data.pipeline import DataSource
from defectscope.models.anchors import (
    AUTO_ANCHOR_SIZE,
    MAX_BOXES_PER_CLASS,
    anchor_coverage,
    choose_anchor_size,
)
from defectscope.training.config import TrainConfig
from defectscope.training.pyramid_cache import PyramidCache

log = logging.getLogger("defectscope.train")


def fit_max_detections(config: TrainConfig, train: DataSource) -> TrainConfig:
    """``config`` whose decoder keeps as many boxes per image as the training image with the
    most true boxes holds, when that is more than ``detect.max_detections`` (a cap below it
    would cut the recall of dense images, unseen)."""
    most = most_boxes(train)
    if most <= config.detect.max_detections:
        return config
    log.warning(
        "an image of %s holds %d true boxes: the detector keeps up to %d boxes per image "
        "(detect.max_detections %d)",
        train.split,
        most,
        most,
        config.detect.max_detections,
    )
    detect = dataclasses.replace(config.detect, max_detections=most)
    return dataclasses.replace(config, detect=detect)


def fit_anchor_size(config: TrainConfig, train: DataSource, classes: list[str]) -> TrainConfig:
    """``config`` with ``detect.anchor_size: auto`` replaced by the size that fits the training
    boxes best (:func:`choose_anchor_size`); a number is kept as it is."""
    phase = config.detect
    if phase.anchor_size != AUTO_ANCHOR_SIZE:
        return config
    boxes, labels = box_table(train)
    size, _ = choose_anchor_size(
        boxes * config.image_size,
        labels,
        classes,
        config.image_size,
        phase.max_level,
        phase.aspect_ratios,
    )
    log.info(
        "detect.anchor_size auto: %.3g (P3 anchors of %.0f px), chosen on the %d boxes of %s "
        "(up to %d per class)",
        size,
        8 * size,
        len(boxes),
        train.split,
        MAX_BOXES_PER_CLASS,
    )
    return dataclasses.replace(config, detect=dataclasses.replace(phase, anchor_size=size))


def report_anchor_coverage(detector, cache: PyramidCache, classes: list[str]) -> dict:
    """Log, per class, the share of fit boxes an anchor matches; warn below one half."""
    coverage = anchor_coverage(detector, cache.boxes(), cache.labels(), classes)
    log.info(
        "true boxes with an anchor at IoU >= 0.5: %s",
        ", ".join(f"{name} {share:.0%}" for name, share in coverage.items()),
    )
    for name, share in coverage.items():
        if share < 0.5:
            log.warning(
                "class %r: only %.0f%% of its boxes have an anchor at IoU >= 0.5; its box shapes "
                "may need other detect.aspect_ratios or detect.anchor_size",
                name,
                100 * share,
            )
    return coverage


def fit_copies(phase) -> list[str]:
    """The augmented copies of the fit images whose features are cached (names of
    :mod:`~defectscope.data.detection`): each epoch sees every image once, in one of them."""
    copies = ["none", "horizontal", "vertical"] if phase.flips else ["none"]
    copies += ["transpose"] if phase.transpose else []
    return copies + [crop_copy(index) for index in range(phase.crop_copies)]
