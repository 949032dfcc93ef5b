"""Corruptions: shapes, ranges, growing strength with severity, and robustness.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from defectscope.cli.main import app
from defectscope.evaluation.corruptions import CORRUPTIONS, corrupt, parse_severities

IMAGES = np.random.default_rng(0).uniform(40, 215, (2, 32, 32, 3)).astype(np.float32)
IMAGES[:, :, :16] += 30  # some structure, so blur changes the image


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_keeps_shape_and_range(name: str) -> None:
    for severity in range(1, 6):
        out = corrupt(IMAGES, name, severity).numpy()
        assert out.shape == IMAGES.shape
        assert out.min() >= 0.0 and out.max() <= 255.0
        assert not np.allclose(out, IMAGES)


@pytest.mark.parametrize(
    "name",
    ["gaussian_noise", "shot_noise", "gaussian_blur", "motion_blur", "brightness", "contrast"],
)
def test_severity_strengthens_the_corruption(name: str) -> None:
    change = [float(np.abs(corrupt(IMAGES, name, s).numpy() - IMAGES).mean()) for s in (1, 3, 5)]
    assert change[0] < change[1] < change[2]


def test_rotations_and_arguments() -> None:
    np.testing.assert_array_equal(corrupt(IMAGES, "rotate90", 2).numpy(), IMAGES[:, ::-1, ::-1])
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(IMAGES, "fog", 1)
    with pytest.raises(ValueError, match="severity must be 1..5, got 6"):
        corrupt(IMAGES, "contrast", 6)
    assert parse_severities("1-3") == [1, 2, 3]
    assert parse_severities("1,5") == [1, 5]
    with pytest.raises(ValueError, match="must lie in 1..5"):
        parse_severities("0-2")


def test_evaluate_writes_robustness(
    tiny_run: Path, synthetic_records: Path, tmp_path: Path
) -> None:
    args = [
        "evaluate",
        "--model",
        str(tiny_run),
        "--data",
        str(synthetic_records),
        "--out",
        str(tmp_path),
        "--corruptions",
        "gaussian_blur,jpeg_compression",
        "--severities",
        "1,5",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "robustness.json").read_text())
    assert set(report["corruptions"]) == {"gaussian_blur", "jpeg_compression"}
    assert set(report["corruptions"]["gaussian_blur"]) == {"1", "5"}
    accuracies = [a for row in report["corruptions"].values() for a in row.values()]
    assert report["mean_corruption_accuracy"] == pytest.approx(np.mean(accuracies))
    assert (tmp_path / "robustness.png").stat().st_size > 1000
    assert "mean corruption accuracy" in result.output
    bad = CliRunner().invoke(app, [*args[:7], "--corruptions", "fog"])
    assert bad.exit_code == 2 and "unknown corruption(s) ['fog']" in bad.output
