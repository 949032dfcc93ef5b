"""Grad-CAM maps, overlays written by predict --explain, and the pointing game."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from defectscope.cli.main import app
from defectscope.data.pipeline import open_source
from defectscope.evaluation.localization import boxes_by_source_id, pointing_game
from defectscope.inference.classifier import load_model
from defectscope.inference.explain import GradCam, overlay, peak_location


def test_heatmaps_are_normalised_maps_at_input_size(tiny_run: Path) -> None:
    gradcam = GradCam(load_model(tiny_run).backend.model)
    images = np.random.default_rng(0).uniform(0, 255, (2, 71, 71, 3)).astype(np.float32)
    maps, probabilities = gradcam.heatmaps(images)
    assert maps.shape == (2, 71, 71) and probabilities.shape == (2, 6)
    assert maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6
    chosen, _ = gradcam.heatmaps(images, class_indices=np.array([0, 5]))
    assert chosen.shape == (2, 71, 71)


def test_peak_and_overlay() -> None:
    heatmap = np.zeros((10, 20))
    heatmap[2, 15] = 1.0
    assert peak_location(heatmap) == (15.5 / 20, 2.5 / 10)
    picture = overlay(np.zeros((10, 20, 3), np.uint8), heatmap)
    assert picture.size == (20, 10)


def test_predict_explain_writes_overlays(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    folder = synthetic_root / "validation" / "images" / "patches"
    result = CliRunner().invoke(
        app, ["predict", str(folder), "--model", str(tiny_run), "--explain", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    written = sorted(tmp_path.glob("*_gradcam.png"))
    assert [p.name for p in written] == sorted(
        f"{p.stem}_gradcam.png" for p in folder.glob("*.jpg")
    )
    assert Image.open(written[0]).size == (71, 71)


def test_pointing_game_on_boxes_of_both_sources(
    tiny_run, synthetic_records, synthetic_root
) -> None:
    records = open_source(synthetic_records, "validation")
    folders = open_source(synthetic_root, "validation")
    assert boxes_by_source_id(records) == boxes_by_source_id(folders)
    score = pointing_game(load_model(tiny_run), records)
    assert score["num_images_with_boxes"] == 12
    assert 0.0 <= score["pointing_game"] <= 1.0
    assert sum(v["images"] for v in score["per_class"].values()) == 12
