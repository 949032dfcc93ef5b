"""``export``, ``benchmark`` and ``serve``: the model on the line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from defectscope.cli.console import warn
from defectscope.cli.options import ModelOption, OverwriteOption, TtaOption
from defectscope.core.errors import ConfigError
from defectscope.core.tf_import import import_tensorflow_quietly, prefer_onednn

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
    overwrite: OverwriteOption = False,
) -> None:
    """Export for CPU inference, with metadata.json and a parity check on the validation split."""
    from defectscope.deploy.export import export_model

    import_tensorflow_quietly()
    metadata = export_model(
        model, format, out, data, calibration_images=calibration_images, overwrite=overwrite
    )
    parity = metadata["parity"]
    if "export_map50" in parity:
        typer.echo(
            f"{format}: mAP@0.5 {parity['export_map50']:.4f} (keras {parity['keras_map50']:.4f}) "
            f"on {parity['num_images']} {parity['split']} images"
        )
    else:
        typer.echo(
            f"{format}: top-1 agreement {parity['top1_agreement']:.4f}, max probability difference "
            f"{parity['max_probability_difference']:.2e}, accuracy "
            f"{parity['export_accuracy']:.4f} (keras {parity['keras_accuracy']:.4f}) on "
            f"{parity['num_images']} {parity['split']} images"
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
    tta: TtaOption = False,
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
    from defectscope.inference.batch import check_options_fit
    from defectscope.inference.model_files import model_task

    check_options_fit(model_task(model), tta=tta)
    import_tensorflow_quietly()
    result = run_benchmark(model, chosen, batches, seconds, tta)
    typer.echo(format_table(result))
    if json_out:
        atomic_write_json(json_out, result)
        typer.echo(f"results: {json_out}")


def _api_key(api_key_file: Path | None) -> str | None:
    """The key from --api-key-file, else from DEFECTSCOPE_API_KEY, else none."""
    if api_key_file is not None:
        try:
            key = api_key_file.read_text().strip()
        except OSError as err:
            raise ConfigError(f"--api-key-file {str(api_key_file)!r}: {err.strerror}") from None
        if not key:
            raise ConfigError(f"--api-key-file {str(api_key_file)!r} is empty")
        return key
    return os.environ.get("DEFECTSCOPE_API_KEY") or None


def _allowed_hosts(host: str, given: list[str]) -> list[str]:
    """--allowed-host values; by default the local names, or any host when listening on all
    interfaces (then a warning says how to restrict it)."""
    if given:
        return given
    if host in ("0.0.0.0", "::", ""):
        warn(
            "listening on every interface and accepting any Host header; "
            "restrict it with --allowed-host NAME (DNS rebinding)"
        )
        return ["*"]
    return sorted({host, "127.0.0.1", "localhost", "::1", "[::1]"})


_Host = Annotated[str, typer.Option(help="Interface to listen on.")]
_Port = Annotated[int, typer.Option(help="TCP port.")]
_MaxUploadMb = Annotated[float, typer.Option(help="Largest accepted upload, in MiB.")]
_MaxMegapixels = Annotated[
    float, typer.Option(help="Largest accepted image, in millions of pixels.")
]
_MaxWaiting = Annotated[
    int, typer.Option(min=1, help="Requests that may wait for the model before 503.")
]
_ApiKeyFile = Annotated[
    Path | None,
    typer.Option(help="Require this key (X-API-Key); default: $DEFECTSCOPE_API_KEY if set."),
]
_AllowedHost = Annotated[
    list[str] | None, typer.Option(help="A Host header to accept (repeatable).")
]
_CorsOrigin = Annotated[
    list[str] | None, typer.Option(help="A web origin allowed to call the API (repeatable).")
]
_HeaderTimeout = Annotated[
    float, typer.Option(help="Seconds a client has to send its request headers.")
]
_BodyTimeout = Annotated[
    float, typer.Option(help="Seconds an upload may pause before it is dropped.")
]
_Iou = Annotated[
    float | None,
    typer.Option(help="Detector: NMS IoU threshold (default: the one chosen in training)."),
]


def serve(
    model: ModelOption,
    host: _Host = "127.0.0.1",
    port: _Port = 8000,
    max_upload_mb: _MaxUploadMb = 10.0,
    max_megapixels: _MaxMegapixels = 32.0,
    max_waiting: _MaxWaiting = 64,
    api_key_file: _ApiKeyFile = None,
    allowed_host: _AllowedHost = None,
    cors_origin: _CorsOrigin = None,
    header_timeout: _HeaderTimeout = 10.0,
    body_timeout: _BodyTimeout = 30.0,
    iou: _Iou = None,
    tta: TtaOption = False,
) -> None:
    """HTTP service: POST /predict, GET /health, /metadata, /docs, and a web page at /."""
    import uvicorn

    from defectscope.deploy.limits import guarded_protocol
    from defectscope.deploy.server import ServiceConfig, create_app
    from defectscope.inference.classifier import load_model

    config = ServiceConfig(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=int(max_megapixels * 1_000_000),
        max_waiting=max_waiting,
        api_key=_api_key(api_key_file),
        allowed_hosts=_allowed_hosts(host, allowed_host or []),
        cors_origins=cors_origin or [],
    )
    # oneDNN's allocator keeps the memory of the largest image decoded and grows with bursts;
    # without it a service returns that memory (Keras batch-1 predict is 6% slower; exports
    # do not use it). An explicit TF_ENABLE_ONEDNN_OPTS in the environment wins.
    prefer_onednn(False)
    import_tensorflow_quietly()
    from defectscope.inference.batch import check_options_fit
    from defectscope.inference.detector import load_detector
    from defectscope.inference.model_files import model_task

    task = model_task(model)
    check_options_fit(task, nms_iou=iou, tta=tta)
    if task == "detect":
        classifier = load_detector(model, nms_iou=iou, tta=tta)
    else:
        classifier = load_model(model)
    app = create_app(classifier, config)
    typer.echo(f"serving {classifier.path} ({classifier.backend_name}) on http://{host}:{port}/")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        http=guarded_protocol(header_timeout, body_timeout),
        timeout_keep_alive=5,
    )
