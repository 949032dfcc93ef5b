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
from defectscope.console import fail, warn
from defectscope.data.layout import DatasetLayoutError
from defectscope.deploy import commands as deploy_commands

app = typer.Typer(
    help="Classify surface defects in industrial images (NEU-DET first).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("defectscope")


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
        raise fail(str(err)) from None
    except ConversionError as err:
        raise fail(str(err), 1) from None
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
        raise fail(str(err)) from None
    typer.echo(report.format())
    if json_out:
        atomic_write_json(json_out, report.to_dict())
        typer.echo(f"report: {json_out}")
    if grid:
        render_grid(report, grid)
        typer.echo(f"grid: {grid}")


@app.command()
def train(
    data: Annotated[Path | None, typer.Option(help="Dataset root or TFRecord folder.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder to create.")] = Path("runs/train"),
    config: Annotated[
        str | None, typer.Option(help="YAML config file or preset name (default, demo, ...).")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="imagenet | none | PATH to xception .weights.h5")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs (phase 2).")] = None,
    head_epochs: Annotated[int | None, typer.Option(help="Head epochs (phase 1).")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Fine-tuning batch size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for a repeatable run.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder from its last epoch.")
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(help="auto | default | mirrored | multiworker (cluster from TF_CONFIG)."),
    ] = None,
    cpu_devices: Annotated[
        int | None, typer.Option(help="Split the CPU into N logical devices (mirrored on CPU).")
    ] = None,
    mixed_precision: Annotated[
        str | None, typer.Option(help="off | float16 (GPU, loss scaling) | bfloat16.")
    ] = None,
    xla: Annotated[
        bool | None, typer.Option("--xla/--no-xla", help="Compile the training step with XLA.")
    ] = None,
) -> None:
    """Transfer learning: head on cached features, then fine-tuning; evaluates at the end.

    --batch-size is per replica; with several replicas the fine-tuning rate scales with them.
    """
    from defectscope.training.config import resolve_config
    from defectscope.training.trainer import RunFolderError
    from defectscope.training.trainer import train as run_training

    try:
        if resume:
            result = run_training(resolve_config(out=str(resume)), resume=True)
        else:
            if data is None:
                raise fail("--data is required (or --resume RUN)")
            overrides = {
                "data": str(data),
                "out": str(out),
                "weights": weights,
                "image_size": image_size,
                "batch_size": batch_size,
                "seed": seed,
                "finetune": {"epochs": epochs} if epochs is not None else None,
                "head": {"epochs": head_epochs} if head_epochs is not None else None,
                "distribute": {
                    key: value
                    for key, value in {
                        "strategy": strategy,
                        "cpu_devices": cpu_devices,
                        "mixed_precision": mixed_precision,
                        "xla": xla,
                    }.items()
                    if value is not None
                },
            }
            result = run_training(resolve_config(config, **overrides))
    except (RunFolderError, FileNotFoundError, ValueError) as err:
        raise fail(str(err)) from None
    metrics = result.metrics
    if not metrics:
        typer.echo(f"worker done ({result.seconds / 60:.1f} min); the chief wrote {result.run_dir}")
        return
    typer.echo(
        f"accuracy {metrics['accuracy']:.4f} ({metrics['num_images'] - metrics['num_errors']}/"
        f"{metrics['num_images']}), macro F1 {metrics['macro_f1']:.4f}, "
        f"{result.seconds / 60:.1f} min -> {result.run_dir}"
    )


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Run folder or .keras file.")],
    data: Annotated[Path, typer.Option(help="Dataset root or TFRecord folder.")],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "validation",
    out: Annotated[Path, typer.Option(help="Folder for metrics and pictures.")] = Path(
        "runs/evaluate"
    ),
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    localization: Annotated[
        bool, typer.Option(help="Score Grad-CAM peaks against the VOC boxes (pointing game).")
    ] = False,
    corruptions: Annotated[
        str | None, typer.Option(help="'all' or comma-separated corruptions: robustness.json.")
    ] = None,
    severities: Annotated[
        str, typer.Option(help="Corruption severities, e.g. 1-5 or 1,3.")
    ] = "1-5",
) -> None:
    """metrics.json, confusion_matrix.png, report.md and misclassified.{csv,png}."""
    from defectscope.data.pipeline import DataSourceError
    from defectscope.evaluation.evaluate import ClassMismatchError
    from defectscope.evaluation.evaluate import evaluate as run_evaluation
    from defectscope.inference.classifier import ModelLoadError

    names, levels = None, None
    try:
        if corruptions:
            from defectscope.evaluation.corruptions import CORRUPTIONS, parse_severities

            names = list(CORRUPTIONS) if corruptions == "all" else corruptions.split(",")
            unknown = sorted(set(names) - set(CORRUPTIONS))
            if unknown:
                raise ValueError(
                    f"unknown corruption(s) {unknown}; choose from {list(CORRUPTIONS)}"
                )
            levels = parse_severities(severities)
        metrics = run_evaluation(model, data, split, out, batch_size, localization, names, levels)
    except (
        ModelLoadError,
        DataSourceError,
        DatasetLayoutError,
        ClassMismatchError,
        ValueError,
    ) as err:
        raise fail(str(err)) from None
    typer.echo(
        f"accuracy {metrics['accuracy']:.4f} ({metrics['num_images'] - metrics['num_errors']}/"
        f"{metrics['num_images']}), macro F1 {metrics['macro_f1']:.4f} -> {out}/report.md"
    )
    if "localization" in metrics:
        typer.echo(f"pointing game {metrics['localization']['pointing_game']:.4f}")
    if "robustness" in metrics:
        mean = metrics["robustness"]["mean_corruption_accuracy"]
        typer.echo(f"mean corruption accuracy {mean:.4f} -> {out}/robustness.json")


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="Run folder, .keras file or export.")],
    sources: Annotated[
        list[str] | None, typer.Argument(help="Image files, folders (recursive), globs.")
    ] = None,
    paths_from: Annotated[
        list[Path] | None,
        typer.Option(help="A text file of image paths, one per line ('-': stdin). Repeatable."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write results to .csv, .json, .jsonl or .parquet.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue a killed run from OUT.partial, skipping scored paths.")
    ] = False,
    shard: Annotated[
        str, typer.Option(help="Score only part i of n (e.g. 0/4), so n machines split a set.")
    ] = "0/1",
    top_k: Annotated[int, typer.Option(min=1, help="Classes listed per image.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    quiet: Annotated[
        bool, typer.Option(help="No line per image; a progress line instead.")
    ] = False,
    explain: Annotated[
        Path | None, typer.Option(help="Write a Grad-CAM heatmap overlay PNG per image here.")
    ] = None,
) -> None:
    """Classify images, streaming; a bad file gets a row with its error and the rest go on."""
    from defectscope.inference.classifier import ModelLoadError, load_model, stream_sources
    from defectscope.inference.sources import Shard
    from defectscope.inference.writers import (
        FORMATS,
        PredictionWriter,
        ResumeError,
        partial_path,
        skip_scored,
    )

    if not sources and not paths_from:
        raise fail("give image files, folders or globs, or --paths-from FILE")
    if out is not None and out.suffix not in FORMATS:
        raise fail(f"--out must end in one of {', '.join(FORMATS)}, got {str(out)!r}")
    if resume and out is None:
        raise fail("--resume needs --out (the results it continues)")
    try:
        part = Shard.parse(shard)
    except ValueError as err:
        raise fail(str(err)) from None
    if resume and out.is_file() and not partial_path(out).is_file():
        typer.echo(f"{out} is already complete; nothing to resume")
        return
    try:
        classifier = load_model(model)
    except ModelLoadError as err:
        raise fail(str(err)) from None
    writer = PredictionWriter(out) if out is not None else None
    items = stream_sources(sources or [], paths_from or [], part)
    counts, explained = {"rows": 0, "predicted": 0}, []
    try:
        if writer is not None:
            items = skip_scored(items, writer.start(resume))
        for prediction in classifier.iter_predict(
            items, batch_size, min(top_k, len(classifier.classes))
        ):
            if writer is not None:
                writer.add(prediction)
            counts["rows"] += 1
            counts["predicted"] += prediction.ok
            if not prediction.ok:
                warn(f"{prediction.path}: {prediction.error}")
            elif quiet:
                if counts["rows"] % 1000 == 0:
                    typer.echo(f"{counts['rows']} images...", err=True)
            else:
                typer.echo(f"{prediction.path}\t{prediction.label}\t{prediction.confidence:.4f}")
            if explain is not None and prediction.ok:
                explained.append(prediction.path)
    except (ResumeError, OSError) as err:
        if writer is not None:
            writer.flush()
        raise fail(str(err)) from None
    if writer is not None:
        writer.finish()
        counts = writer.counts
    if explain is not None:
        from defectscope.deploy.gradcam import write_explanations

        written = write_explanations(classifier, explained, explain)
        typer.echo(f"{len(written)} heatmaps -> {explain}")
    where = f" -> {out}" if out else ""
    typer.echo(f"{counts['predicted']} of {counts['rows']} images predicted{where}")
    if not counts["predicted"]:
        raise fail("no image could be predicted", 1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "runs/demo"
    ),
    per_class: Annotated[int, typer.Option(min=2, help="Training images per class.")] = 40,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 14,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic dataset and the run.")] = 0,
) -> None:
    """The whole flow offline on a synthetic NEU-like dataset: convert, inspect, train, predict."""
    from defectscope.data.synthetic import add_quirks, synthesize_dataset

    if out.exists():
        shutil.rmtree(out)
    dataset, records, run = out / "dataset", out / "tfrecords", out / "run"
    typer.echo(f"[1/5] synthesising a NEU-like dataset in {dataset}")
    synthesize_dataset(dataset, per_class, max(2, per_class // 4), seed=seed)
    planted = add_quirks(dataset)
    typer.echo(f"      planted {len(planted)} broken or stray files to show the problem report")
    typer.echo(f"[2/5] convert -> {records}")
    convert(data=dataset, out=records, shards=2, workers=os.cpu_count() or 1)
    typer.echo(f"[3/5] inspect {records}")
    inspect(records, grid=out / "samples.png", json_out=out / "inspect.json", samples=6)
    typer.echo(f"[4/5] train (preset 'demo': 96 px, random init, {epochs} epochs) -> {run}")
    train(data=records, out=run, config="demo", epochs=epochs, seed=seed)
    typer.echo(
        f"[5/5] predict the validation images and the broken files -> {out / 'predictions.csv'}"
    )
    predict(
        sources=[str(dataset / "validation" / "images"), str(planted[2])],
        model=run,
        out=out / "predictions.csv",
    )
    typer.echo(
        f"done. report {run / 'evaluation' / 'report.md'}, confusion matrix "
        f"{run / 'evaluation' / 'confusion_matrix.png'}, curves {run / 'training_curves.png'}, "
        f"samples {out / 'samples.png'}"
    )


@app.command()
def version() -> None:
    """Print the defectscope version."""
    typer.echo(__version__)


deploy_commands.register(app)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # tf.distribute's per-op chatter
    app()


if __name__ == "__main__":
    main()
