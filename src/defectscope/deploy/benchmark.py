"""``defectscope benchmark``: images/s and latency of every backend, measured in one run.

The Keras baseline is ``model.predict``, as users call it. The bound printed with the table is
the model's FLOPs per image against this machine's measured float32 matrix-multiply peak.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from defectscope.deploy.export import FORMATS, ExportError, export_model, run_folder_of
from defectscope.inference.backends import KerasBackend, load_backend
from defectscope.inference.detector import Detector
from defectscope.inference.explain import source_model_path
from defectscope.inference.model_files import METADATA_NAME, locate_model, read_metadata


@dataclass
class BenchmarkRow:
    backend: str
    batch: int
    images_per_second: float
    p50_ms: float
    p95_ms: float
    speedup_vs_keras: float = float("nan")


def model_flops(keras_model) -> int:
    """Multiply-adds x 2 of every convolution and dense layer, for one image."""
    import keras

    total = 0

    def visit(layer) -> None:
        nonlocal total
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                visit(inner)
            return
        counted = (
            keras.layers.Conv2D,
            keras.layers.SeparableConv2D,
            keras.layers.DepthwiseConv2D,
            keras.layers.Dense,
        )
        if not isinstance(layer, counted):
            return
        out_shape = layer.output.shape
        in_channels = int(layer.input.shape[-1])
        if isinstance(layer, keras.layers.Dense):
            total += 2 * in_channels * int(out_shape[-1])
            return
        positions = int(out_shape[1]) * int(out_shape[2])
        kh, kw = layer.kernel_size
        if isinstance(layer, keras.layers.SeparableConv2D):
            total += 2 * positions * kh * kw * in_channels  # depthwise
            total += 2 * positions * in_channels * int(out_shape[-1])  # pointwise
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            total += 2 * positions * kh * kw * in_channels
        else:
            total += 2 * positions * kh * kw * in_channels * int(out_shape[-1])

    visit(keras_model)
    return total


def measured_peak_flops(size: int = 2048, seconds: float = 1.0) -> float:
    """float32 FLOP/s of a large TensorFlow matrix product on every core."""
    import tensorflow as tf

    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    tf.linalg.matmul(a, b).numpy()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tf.linalg.matmul(a, b).numpy()
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - started)


def time_backend(call, images: np.ndarray, seconds: float, min_calls: int = 3) -> tuple[float, ...]:
    """Images/s, p50 and p95 latency (ms) of ``call`` on one batch, after a warm-up call."""
    call(images)
    latencies = []
    started = time.perf_counter()
    while len(latencies) < min_calls or time.perf_counter() - started < seconds:
        tic = time.perf_counter()
        call(images)
        latencies.append(time.perf_counter() - tic)
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return len(images) * len(latencies) / sum(latencies), 1000 * quantiles[9], 1000 * quantiles[18]


def _detector_calls(location, name: str, tta: bool) -> tuple[Detector, dict]:
    """One detector file loaded, and its whole detections (network and box decoding) by
    backend name; with ``tta`` also with test-time flips (``NAME+tta``)."""
    metadata = read_metadata(location)
    detector = Detector(location, metadata)
    calls = {name: detector.detect_arrays}
    if tta:
        calls[f"{name}+tta"] = Detector(location, metadata, tta=True).detect_arrays
    return detector, calls


def run_benchmark(
    model: str | Path,
    formats: tuple[str, ...] = FORMATS,
    batches: tuple[int, ...] = (1, 32),
    seconds: float = 10.0,
    tta: bool = False,
) -> dict:
    """Time Keras ``predict`` and each export of a run (exporting the missing ones); ``tta``:
    a detector also with test-time flips."""
    location = locate_model(model)
    if location.kind != "keras":  # an export: benchmark the run it came from
        source = source_model_path(read_metadata(location), location.path)
        if source is None:
            raise ExportError(f"{model}: an export without its source_model cannot be compared")
        location = locate_model(source)
    metadata = read_metadata(location)
    size = int(metadata["image_size"])
    detector = metadata.get("task") == "detect"
    if detector:  # network and KerasHub's box decoding, for Keras and each export alike
        keras_detector, callables = _detector_calls(location, "keras", tta)
        keras_model = keras_detector.model
    else:
        keras_model = KerasBackend(location.path, metadata).model
        callables = {"keras": lambda x: keras_model.predict(x, verbose=0)}
    skipped = {}
    for fmt in formats:
        folder = run_folder_of(location.path) / "export" / fmt
        if not (folder / METADATA_NAME).is_file():
            try:
                export_model(location.path, fmt)
            except ExportError as err:  # e.g. an int8 model that fails its parity check
                skipped[fmt] = str(err)
                continue
        if detector:
            callables.update(_detector_calls(locate_model(folder), fmt, tta)[1])
        else:
            callables[fmt] = load_backend(folder).predict
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
        for name, call in callables.items():
            rate, p50, p95 = time_backend(call, images, seconds)
            rows.append(BenchmarkRow(name, batch, rate, p50, p95))
        baseline = next(r for r in rows if r.backend == "keras" and r.batch == batch)
        for row in rows:
            if row.batch == batch:
                row.speedup_vs_keras = row.images_per_second / baseline.images_per_second
    flops, peak = model_flops(keras_model), measured_peak_flops()
    return {
        "model": str(location.path),
        "image_size": size,
        "cores": os.cpu_count(),
        "rows": [asdict(r) for r in rows],
        "skipped": skipped,
        "gflops_per_image": flops / 1e9,
        "measured_peak_gflops": peak / 1e9,
        "bound_images_per_second": peak / flops,
    }


def format_table(result: dict) -> str:
    lines = [
        f"model {result['model']}  input {result['image_size']}px  cores {result['cores']}",
        f"{'backend':<16}{'batch':>6}{'img/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'vs keras':>10}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['backend']:<16}{row['batch']:>6}{row['images_per_second']:>9.1f}"
            f"{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}{row['speedup_vs_keras']:>9.2f}x"
        )
    for fmt, reason in result.get("skipped", {}).items():
        lines.append(f"{fmt:<16} not measured: {reason}")
    lines.append(
        f"bound: {result['gflops_per_image']:.2f} GFLOP per image / "
        f"{result['measured_peak_gflops']:.0f} GFLOP/s measured matmul peak = "
        f"{result['bound_images_per_second']:.0f} img/s at most"
    )
    return "\n".join(lines)
