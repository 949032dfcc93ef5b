"""``convert`` and ``inspect``: datasets to TFRecords, and what a dataset holds."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from defectscope.cli.console import warn
from defectscope.cli.options import OverwriteOption
from defectscope.core.tf_import import import_tensorflow_quietly


def _summarise_conversion(manifest: dict, out: Path, seconds: float) -> None:
    for split, info in manifest["splits"].items():
        counts = ", ".join(f"{c} {n}" for c, n in info["class_counts"].items())
        typer.echo(
            f"{split}: {info['num_records']} images, {info['num_boxes']} boxes, "
            f"{len(info['shards'])} shards ({counts})"
        )
    for skipped in manifest["skipped"]:
        warn(f"skipped {skipped['path']}: {skipped['reason']}")
    noted = [p for p in manifest["problems"] if p["severity"] != "error"]
    if noted:
        kinds: dict[str, int] = {}
        for problem in noted:
            kinds[problem["kind"]] = kinds.get(problem["kind"], 0) + 1
        summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        typer.echo(f"notes: {summary} (details: defectscope inspect {out})")
    typer.echo(f"wrote {out / 'manifest.json'} in {seconds:.1f} s")


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
    overwrite: OverwriteOption = False,
) -> None:
    """Validate a dataset and write sharded TFRecords plus manifest.json."""
    from defectscope.data.tfrecord_writer import convert_dataset

    started = time.perf_counter()
    import_tensorflow_quietly()
    manifest = convert_dataset(
        data, out, shards, workers, val_fraction=val_fraction, overwrite=overwrite
    )
    _summarise_conversion(manifest, out, time.perf_counter() - started)


def inspect(
    path: Annotated[Path, typer.Argument(help="Dataset root or TFRecord folder.")],
    grid: Annotated[Path | None, typer.Option(help="Write a PNG grid of samples here.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full report as JSON here.")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Samples per class in the grid.")] = 6,
) -> None:
    """Counts per class and split, image sizes, boxes, every problem, and a sample grid."""
    from defectscope.core.atomic_io import atomic_write_json
    from defectscope.data.inspect import inspect_path, render_grid

    import_tensorflow_quietly()
    report = inspect_path(path, samples_per_class=samples)
    typer.echo(report.format())
    if json_out:
        atomic_write_json(json_out, report.to_dict())
        typer.echo(f"report: {json_out}")
    if grid:
        render_grid(report, grid)
        typer.echo(f"grid: {grid}")
