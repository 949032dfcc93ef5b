"""The ``defectscope`` command line (typer)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from defectscope import __version__
from defectscope.data.layout import DatasetLayoutError

app = typer.Typer(
    help="Classify surface defects in industrial images (NEU-DET first).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("defectscope")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def _summarise_conversion(manifest: dict, out: Path, seconds: float) -> None:
    for split, info in manifest["splits"].items():
        counts = ", ".join(f"{c} {n}" for c, n in info["class_counts"].items())
        typer.echo(
            f"{split}: {info['num_records']} images, {info['num_boxes']} boxes, "
            f"{len(info['shards'])} shards ({counts})"
        )
    for skipped in manifest["skipped"]:
        _warn(f"skipped {skipped['path']}: {skipped['reason']}")
    noted = [p for p in manifest["problems"] if p["severity"] != "error"]
    if noted:
        kinds: dict[str, int] = {}
        for problem in noted:
            kinds[problem["kind"]] = kinds.get(problem["kind"], 0) + 1
        summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        typer.echo(f"notes: {summary} (details: defectscope inspect {out})")
    typer.echo(f"wrote {out / 'manifest.json'} in {seconds:.1f} s")


@app.command()
def convert(
    data: Annotated[
        Path, typer.Option(help="Dataset root (Kaggle NEU-DET or one folder per class).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the TFRecord shards and manifest.json.")],
    shards: Annotated[int, typer.Option(min=1, help="Shards per split.")] = 4,
    workers: Annotated[int, typer.Option(min=1, help="Parallel image decoders.")] = os.cpu_count()
    or 1,
    val_fraction: Annotated[
        float, typer.Option(help="Validation share for a folder-per-class dataset (no split).")
    ] = 0.2,
) -> None:
    """Validate a dataset and write sharded TFRecords plus manifest.json."""
    from defectscope.data.tfrecord_writer import ConversionError, convert_dataset

    started = time.perf_counter()
    try:
        manifest = convert_dataset(data, out, shards, workers, val_fraction=val_fraction)
    except DatasetLayoutError as err:
        raise _fail(str(err)) from None
    except ConversionError as err:
        raise _fail(str(err), 1) from None
    _summarise_conversion(manifest, out, time.perf_counter() - started)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Dataset root or TFRecord folder.")],
    grid: Annotated[Path | None, typer.Option(help="Write a PNG grid of samples here.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full report as JSON here.")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Samples per class in the grid.")] = 6,
) -> None:
    """Counts per class and split, image sizes, boxes, every problem, and a sample grid."""
    from defectscope.atomic_io import atomic_write_json
    from defectscope.data.inspect import inspect_path, render_grid
    from defectscope.data.pipeline import DataSourceError

    try:
        report = inspect_path(path, samples_per_class=samples)
    except (DatasetLayoutError, DataSourceError) as err:
        raise _fail(str(err)) from None
    typer.echo(report.format())
    if json_out:
        atomic_write_json(json_out, report.to_dict())
        typer.echo(f"report: {json_out}")
    if grid:
        render_grid(report, grid)
        typer.echo(f"grid: {grid}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "runs/demo"
    ),
    per_class: Annotated[int, typer.Option(min=2, help="Training images per class.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic dataset.")] = 0,
) -> None:
    """Run the whole flow offline on a synthetic NEU-like dataset."""
    from defectscope.data.synthetic import add_quirks, synthesize_dataset

    dataset = out / "dataset"
    if dataset.exists():
        shutil.rmtree(dataset)
    typer.echo(f"[1/3] synthesising a NEU-like dataset in {dataset}")
    synthesize_dataset(dataset, per_class, max(2, per_class // 4), seed=seed)
    planted = add_quirks(dataset)
    typer.echo(f"      planted {len(planted)} broken or stray files to show the problem report")
    typer.echo(f"[2/3] convert -> {out / 'tfrecords'}")
    convert(data=dataset, out=out / "tfrecords", shards=2, workers=os.cpu_count() or 1)
    typer.echo(f"[3/3] inspect {out / 'tfrecords'}")
    inspect(out / "tfrecords", grid=out / "samples.png", json_out=out / "inspect.json", samples=6)
    typer.echo(f"done: sample grid {out / 'samples.png'}, report {out / 'inspect.json'}")


@app.command()
def version() -> None:
    """Print the defectscope version."""
    typer.echo(__version__)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    app()


if __name__ == "__main__":
    main()
