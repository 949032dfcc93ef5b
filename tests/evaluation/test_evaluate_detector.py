"""The detector's evaluation pictures."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from defectscope.evaluation.evaluate_detector import plot_pr_curves


def test_pr_curves_of_a_detector_that_found_no_box_are_drawn_without_a_warning(
    tmp_path: Path,
) -> None:
    metrics = {"map50": 0.0, "per_class_ap50": {"scratch": 0.0}, "pr_curves": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of a legend without entries
        plot_pr_curves(metrics, tmp_path / "pr.png")
    with Image.open(tmp_path / "pr.png") as picture:
        assert picture.size[0] > 100
