"""``evaluate``: metrics and report files of a model on one split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from defectscope.cli.options import (
    BatchSizeOption,
    DataOption,
    ModelOption,
    OverwriteOption,
    TtaOption,
)
from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.inference.model_files import model_task


def evaluate(
    model: ModelOption,
    data: DataOption,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "validation",
    out: Annotated[Path, typer.Option(help="Folder for metrics and pictures.")] = Path(
        "runs/evaluate"
    ),
    batch_size: BatchSizeOption = 32,
    localization: Annotated[
        bool, typer.Option(help="Score Grad-CAM peaks against the VOC boxes (pointing game).")
    ] = False,
    corruptions: Annotated[
        str | None, typer.Option(help="'all' or comma-separated corruptions: robustness.json.")
    ] = None,
    severities: Annotated[
        str, typer.Option(help="Corruption severities, e.g. 1-5 or 1,3.")
    ] = "1-5",
    overwrite: OverwriteOption = False,
    tta: TtaOption = False,
) -> None:
    """metrics.json, confusion_matrix.png, report.md and misclassified.{csv,png}."""
    from defectscope.evaluation.corruptions import parse_corruptions, parse_severities
    from defectscope.evaluation.evaluate import check_inputs
    from defectscope.evaluation.evaluate import evaluate as run_evaluation
    from defectscope.inference.batch import check_options_fit

    task = model_task(model)
    check_options_fit(task, tta=tta)
    if task == "detect":
        return _evaluate_detector(model, data, split, out, overwrite, tta)
    names = parse_corruptions(corruptions) if corruptions else None
    levels = parse_severities(severities) if corruptions else None
    check_inputs(model, data, split, out, overwrite)  # before TensorFlow loads
    import_tensorflow_quietly()
    metrics = run_evaluation(
        model, data, split, out, batch_size, localization, names, levels, overwrite=overwrite
    )
    typer.echo(
        f"accuracy {metrics['accuracy']:.4f} ({metrics['num_images'] - metrics['num_errors']}/"
        f"{metrics['num_images']}), macro F1 {metrics['macro_f1']:.4f} -> {out}/report.md"
    )
    if "localization" in metrics:
        typer.echo(f"pointing game {metrics['localization']['pointing_game']:.4f}")
    if "robustness" in metrics:
        mean = metrics["robustness"]["mean_corruption_accuracy"]
        typer.echo(f"mean corruption accuracy {mean:.4f} -> {out}/robustness.json")


def _evaluate_detector(
    model: Path, data: Path, split: str, out: Path, overwrite: bool, tta: bool
) -> None:
    from defectscope.evaluation.evaluate_detector import check_detector_inputs, evaluate_detector

    check_detector_inputs(model, data, split, out, overwrite)  # before TensorFlow loads
    import_tensorflow_quietly()
    metrics = evaluate_detector(model, data, split, out, overwrite=overwrite, tta=tta)
    typer.echo(
        f"mAP@0.5 {metrics['map50']:.4f}, mAP@0.5:0.95 {metrics['map50_95']:.4f} "
        f"({metrics['num_images']} images, {metrics['num_boxes']} boxes) -> {out}/report.md"
    )
