"""``export``, ``benchmark`` and ``serve``: the model on the line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from defectscope.cli.options import ModelOption
from defectscope.core.errors import ConfigError
from defectscope.core.tf_import import import_tensorflow_quietly

EXPORT_FORMATS = ("savedmodel", "tflite", "tflite-int8", "onnx", "onnx-int8")


def export(
    model: Annotated[Path, typer.Option(help="Run folder or .keras file.")],
    format: Annotated[str, typer.Option("--format", help=" | ".join(EXPORT_FORMATS))],
    out: Annotated[
        Path | None, typer.Option(help="Export folder (default RUN/export/FORMAT).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Data for parity and int8 calibration (default: the run's).")
    ] = None,
    calibration_images: Annotated[
        int, typer.Option(min=8, help="Training images that calibrate an int8 export.")
    ] = 400,
    overwrite: Annotated[
        bool, typer.Option(help="Replace --out even when it holds other files than an export.")
    ] = False,
) -> None:
    """Export for CPU inference, with metadata.json and a parity check on the validation split."""
    from defectscope.deploy.export import export_model

    import_tensorflow_quietly()
    metadata = export_model(
        model, format, out, data, calibration_images=calibration_images, overwrite=overwrite
    )
    parity = metadata["parity"]
    typer.echo(
        f"{format}: top-1 agreement {parity['top1_agreement']:.4f}, max probability difference "
        f"{parity['max_probability_difference']:.2e}, accuracy {parity['export_accuracy']:.4f} "
        f"(keras {parity['keras_accuracy']:.4f}) on {parity['num_images']} {parity['split']} images"
    )
    typer.echo(f"exported to {metadata['export_dir']}")


def benchmark(
    model: Annotated[Path, typer.Option(help="Run folder, .keras file or one of its exports.")],
    formats: Annotated[str, typer.Option(help="Comma-separated export formats.")] = ",".join(
        EXPORT_FORMATS
    ),
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32",
    seconds: Annotated[float, typer.Option(help="Timing per backend and batch.")] = 10.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Images/s and p50/p95 latency of Keras predict and each export, in one run."""
    from defectscope.core.atomic_io import atomic_write_json
    from defectscope.deploy.benchmark import format_table, run_benchmark

    chosen = tuple(f for f in formats.split(",") if f)
    unknown = sorted(set(chosen) - set(EXPORT_FORMATS))
    if unknown:
        raise ConfigError(f"unknown format(s) {unknown}; choose from {EXPORT_FORMATS}")
    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated integers, got {batch!r}") from None
    import_tensorflow_quietly()
    result = run_benchmark(model, chosen, batches, seconds)
    typer.echo(format_table(result))
    if json_out:
        atomic_write_json(json_out, result)
        typer.echo(f"results: {json_out}")


def serve(
    model: ModelOption,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload, in MiB.")] = 10.0,
) -> None:
    """HTTP service: POST /predict, GET /health, /metadata, /docs, and a web page at /."""
    import uvicorn

    from defectscope.deploy.server import create_app
    from defectscope.inference.classifier import load_model

    import_tensorflow_quietly()
    classifier = load_model(model)
    app = create_app(classifier, int(max_upload_mb * 1024 * 1024))
    typer.echo(f"serving {classifier.path} ({classifier.backend_name}) on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="info")
