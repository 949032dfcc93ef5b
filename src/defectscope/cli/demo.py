"""``demo``: the whole flow offline on a synthetic NEU-like dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

from defectscope.cli.data import convert, inspect
from defectscope.cli.options import OverwriteOption
from defectscope.cli.predict import predict
from defectscope.cli.train import train
from defectscope.core.files import prepare_output_folder
from defectscope.core.tf_import import prefer_onednn

DEMO_ENTRIES = frozenset(
    {
        "dataset",
        "tfrecords",
        "run",
        ".feature-cache",
        "samples.png",
        "inspect.json",
        "predictions.csv",
        "detector",
        "boxes",
        "detections.csv",
    }
)
DETECTOR_EPOCHS = 8


def _clear_earlier_demo(out: Path, overwrite: bool) -> None:
    """Remove what an earlier demo made in ``out``; refuse a folder holding anything else."""
    prepare_output_folder(out, "demo outputs", lambda p: p.name in DEMO_ENTRIES, overwrite)
    for name in DEMO_ENTRIES:
        entry = out / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "runs/demo"
    ),
    per_class: Annotated[int, typer.Option(min=2, help="Training images per class.")] = 40,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 14,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic dataset and the run.")] = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """The whole flow offline on a synthetic NEU-like dataset: convert, inspect, train, predict.

    A rerun replaces what an earlier demo made in --out and nothing else.
    """
    from defectscope.data.synthetic import add_quirks, synthesize_dataset

    prefer_onednn(True)  # it trains: before convert imports TensorFlow
    _clear_earlier_demo(out, overwrite)
    dataset, records, run = out / "dataset", out / "tfrecords", out / "run"
    typer.echo(f"[1/6] synthesising a NEU-like dataset in {dataset}")
    synthesize_dataset(dataset, per_class, max(2, per_class // 4), seed=seed)
    planted = add_quirks(dataset)
    typer.echo(f"      planted {len(planted)} broken or stray files to show the problem report")
    typer.echo(f"[2/6] convert -> {records}")
    convert(data=dataset, out=records, shards=2, workers=os.cpu_count() or 1)
    typer.echo(f"[3/6] inspect {records}")
    inspect(records, grid=out / "samples.png", json_out=out / "inspect.json", samples=6)
    typer.echo(f"[4/6] train (preset 'demo': 96 px, random init, {epochs} epochs) -> {run}")
    train(data=records, out=run, config="demo", epochs=epochs, seed=seed)
    typer.echo(
        f"[5/6] predict the validation images and the broken files -> {out / 'predictions.csv'}"
    )
    predict(
        sources=[str(dataset / "validation" / "images"), str(planted[2])],
        model=run,
        out=out / "predictions.csv",
    )
    _detect(out, records, dataset, seed)
    typer.echo(
        f"done. report {run / 'evaluation' / 'report.md'}, confusion matrix "
        f"{run / 'evaluation' / 'confusion_matrix.png'}, curves {run / 'training_curves.png'}, "
        f"samples {out / 'samples.png'}, boxes {out / 'boxes'}"
    )


def _detector_weights() -> str:
    """ImageNet weights when this machine has them (``DEFECTSCOPE_WEIGHTS``, Keras' cache or a
    download), else a random encoder: the demo never needs the network."""
    from defectscope.core.errors import ConfigError
    from defectscope.models.xception import resolve_weights

    try:
        resolve_weights("imagenet")
    except ConfigError:
        return "none"
    return "imagenet"


def _detect(out: Path, records: Path, dataset: Path, seed: int) -> None:
    weights = _detector_weights()
    encoder = (
        "ImageNet" if weights == "imagenet" else "random (set DEFECTSCOPE_WEIGHTS for ImageNet)"
    )
    typer.echo(
        f"[6/6] train a defect detector (boxes; 128 px, {encoder} encoder, {DETECTOR_EPOCHS} "
        f"epochs) -> {out / 'detector'}; boxes of the validation images -> {out / 'boxes'}"
    )
    train(
        data=records,
        out=out / "detector",
        task="detect",
        weights=weights,
        image_size=128,
        epochs=DETECTOR_EPOCHS,
        batch_size=8,
        seed=seed,
        finetune_epochs=0,  # the heads only, so the demo keeps to its minutes
    )
    predict(
        sources=[str(dataset / "validation" / "images")],
        model=out / "detector",
        out=out / "detections.csv",
        quiet=True,
        draw=out / "boxes",
    )
