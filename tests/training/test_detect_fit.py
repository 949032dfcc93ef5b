"""Settings fitted to the training boxes: the anchor size ``auto`` chooses, and its checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from defectscope.core.errors import ConfigError
from defectscope.training.config import DetectPhaseConfig
from defectscope.training.trainer import train
from tests.helpers import saved_detector, tiny_detector_config


def test_anchor_size_is_a_positive_number_or_auto() -> None:
    assert DetectPhaseConfig(anchor_size="auto").anchor_size == "auto"
    assert DetectPhaseConfig(anchor_size=3).anchor_size == 3
    for bad in (0, -2.0, float("inf"), "big", True, None, [4]):
        message = f"detect.anchor_size must be a number > 0 or 'auto', got {bad!r}"
        with pytest.raises(ConfigError, match=re.escape(message)):
            DetectPhaseConfig(anchor_size=bad)


def test_an_auto_anchor_size_is_chosen_on_the_training_boxes_and_saved(
    synthetic_records: Path, tmp_path: Path
) -> None:
    """config.yaml keeps ``auto`` (a resume chooses again, alike); the metadata, the exports'
    decoders and the saved detector carry the size chosen on the fit images' boxes."""
    from defectscope.data.detection import box_table
    from defectscope.models.anchors import choose_anchor_size
    from defectscope.training.sources import open_run_sources

    config = tiny_detector_config(
        synthetic_records, tmp_path / "run", detect={"epochs": 1, "anchor_size": "auto"}
    )
    train(config)
    assert "anchor_size: auto" in (tmp_path / "run" / "config.yaml").read_text()
    metadata = json.loads((tmp_path / "run" / "weights" / "metadata.json").read_text())
    fit = open_run_sources(config).fit
    boxes, labels = box_table(fit)
    expected, _ = choose_anchor_size(
        boxes * 96, labels, metadata["classes"], 96, 7, config.detect.aspect_ratios
    )
    assert metadata["detector"]["anchor_size"] == expected
    for saved in ("best", "last"):
        assert saved_detector(tmp_path / "run", saved).anchor_generator.anchor_size == expected
