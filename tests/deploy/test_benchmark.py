"""The benchmark's pieces: FLOP count, timing, and one small run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from defectscope.cli import app
from defectscope.deploy.benchmark import model_flops, time_backend
from defectscope.models.xception import create_model


def test_xception_flops_match_the_published_figure() -> None:
    flops = model_flops(create_model(6, 299, "none"))
    assert 16.0e9 < flops < 17.5e9  # Xception: about 8.4 G multiply-adds at 299 px


def test_time_backend_reports_rates_and_latencies() -> None:
    rate, p50, p95 = time_backend(lambda x: x * 2, np.ones((4, 3)), seconds=0.05)
    assert rate > 0 and 0 <= p50 <= p95


@pytest.mark.slow
def test_benchmark_command(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = [
        "benchmark",
        "--model",
        str(tiny_run),
        "--formats",
        "onnx",
        "--batch",
        "1,4",
        "--seconds",
        "0.3",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {(r["backend"], r["batch"]) for r in report["rows"]} == {
        ("keras", 1),
        ("onnx", 1),
        ("keras", 4),
        ("onnx", 4),
    }
    assert report["cores"] >= 1 and report["bound_images_per_second"] > 0
    assert "GFLOP per image" in result.output
