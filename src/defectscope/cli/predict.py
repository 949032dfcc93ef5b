"""``predict``: classify images, streaming, into the terminal or a results file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from defectscope.cli.console import warn
from defectscope.cli.options import BatchSizeOption, ModelOption, OverwriteOption, TtaOption
from defectscope.core.errors import ConfigError, NothingDoneError
from defectscope.core.progress import Progress
from defectscope.core.text import plural

_Sources = Annotated[
    list[str] | None, typer.Argument(help="Image files, folders (recursive), globs.")
]
_PathsFrom = Annotated[
    list[Path] | None,
    typer.Option(help="A text file of image paths, one per line ('-': stdin). Repeatable."),
]
_Out = Annotated[
    Path | None, typer.Option(help="Write results to .csv, .json, .jsonl or .parquet.")
]
_Resume = Annotated[
    bool, typer.Option(help="Continue a killed run from OUT.partial, skipping scored paths.")
]
_Shard = Annotated[
    str, typer.Option(help="Score only part i of n (e.g. 0/4), so n machines split a set.")
]
_TopK = Annotated[int, typer.Option(min=1, help="Classes listed per image.")]
_Quiet = Annotated[bool, typer.Option(help="No line per image; a progress count instead.")]
_Explain = Annotated[
    Path | None, typer.Option(help="Write a Grad-CAM heatmap overlay PNG per image here.")
]
_Conf = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Detector: keep boxes at least this confident (default: the confidence chosen "
        "when the detector was trained, else 0.25).",
    ),
]
_Draw = Annotated[
    Path | None, typer.Option(help="Detector: write each image with its boxes here (PNG).")
]
_Iou = Annotated[
    float | None,
    typer.Option(
        help="Detector: drop a box overlapping a better one of its class above this IoU "
        "(default: the threshold chosen when the detector was trained)."
    ),
]


def predict(
    model: ModelOption,
    sources: _Sources = None,
    paths_from: _PathsFrom = None,
    out: _Out = None,
    resume: _Resume = False,
    shard: _Shard = "0/1",
    top_k: _TopK = 3,
    batch_size: BatchSizeOption = 32,
    quiet: _Quiet = False,
    explain: _Explain = None,
    conf: _Conf = None,
    draw: _Draw = None,
    iou: _Iou = None,
    tta: TtaOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Classify images (or find defect boxes, with a detector), streaming; a bad file gets a
    row with its error and the rest go on. A detector's CSV has one row per box."""
    from defectscope.inference.batch import check_output, predict_files
    from defectscope.inference.model_files import locate_model, read_metadata
    from defectscope.inference.sources import Shard

    if not sources and not paths_from:
        raise ConfigError("give image files, folders or globs, or --paths-from FILE")
    part = Shard.parse(shard)
    check_output(out, resume)
    read_metadata(locate_model(model))  # a wrong --model fails here, before TensorFlow loads
    progress = Progress("predict") if quiet else None

    def show(prediction) -> None:
        if not prediction.ok:
            warn(f"{prediction.path}: {prediction.error}")
        elif progress is None:
            typer.echo(f"{prediction.path}\t{_summary_of(prediction)}")
        if progress is not None:
            progress.update()

    try:
        summary = predict_files(
            model,
            sources or [],
            paths_from or [],
            out=out,
            resume=resume,
            shard=part,
            batch_size=batch_size,
            top_k=top_k,
            explain_dir=explain,
            on_prediction=show,
            overwrite=overwrite,
            confidence=conf,
            draw_dir=draw,
            nms_iou=iou,
            tta=tta,
        )
    finally:
        if progress is not None:
            progress.close()
    _report(summary, out, explain, draw)


def _summary_of(result) -> str:
    """``label<TAB>confidence`` of a prediction; the boxes of a detection, one per class."""
    if not hasattr(result, "boxes"):
        return f"{result.label}\t{result.confidence:.4f}"
    if not result.boxes:
        return "no defect found"
    best = max(result.boxes, key=lambda box: box.confidence)
    counts = ", ".join(f"{count} {label}" for label, count in result.counts().items())
    found = plural(len(result.boxes), "box", "boxes")
    return f"{found} ({counts}); top {best.label} {best.confidence:.4f}"


def _report(summary, out: Path | None, explain: Path | None, draw: Path | None) -> None:
    if summary.already_complete:
        typer.echo(f"{out} is already complete; nothing to resume")
        return
    if explain is not None:
        typer.echo(f"{plural(summary.heatmaps, 'heatmap')} -> {explain}")
    if draw is not None:
        typer.echo(f"{plural(summary.drawings, 'picture')} with boxes -> {draw}")
    if not summary.images:
        raise NothingDoneError("no image found in the given sources")
    where = f" -> {out}" if out else ""
    typer.echo(f"{summary.predicted} of {plural(summary.images, 'image')} predicted{where}")
    if summary.box_confidence is not None:
        typer.echo(f"boxes at least {summary.box_confidence:.2f} confident (--conf changes it)")
    if not summary.predicted:
        raise NothingDoneError("no image could be predicted")
