"""The benchmark's pieces: FLOP count, timing, and one small run through the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from defectscope.cli.main import app
from defectscope.deploy.benchmark import model_flops, time_backend
from defectscope.models.xception import create_model


def test_xception_flops_match_the_published_figure() -> None:
    flops = model_flops(create_model(6, 299, "none"))
    assert 16.0e9 < flops < 17.5e9  # Xception: about 8.4 G multiply-adds at 299 px


def test_time_backend_measures_a_known_latency() -> None:
    def ten_ms(images: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        return images

    rate, p50, p95 = time_backend(ten_ms, np.ones((4, 3)), seconds=0.3)
    assert 9.5 <= p50 <= 30 and p50 <= p95  # milliseconds; sleep never returns early
    assert 4 / 0.030 <= rate <= 4 / 0.0095  # images per second of a 4-image batch


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
    assert report["cores"] >= 1
    assert all(r["speedup_vs_keras"] == 1.0 for r in report["rows"] if r["backend"] == "keras")
    bound = report["measured_peak_gflops"] / report["gflops_per_image"]
    assert report["bound_images_per_second"] == pytest.approx(bound)
    tiny = model_flops(create_model(6, 71, "none")) / 1e9  # the tiny run's model
    assert report["gflops_per_image"] == pytest.approx(tiny)
    assert "GFLOP per image" in result.output
