"""The batch prediction job: score many images into one results file, resumable and sharded.

Used by ``defectscope predict``, the benchmarks and the kill harness alike. Inputs stream (folder
walks, globs, path lists), predictions are appended to ``OUT.partial`` in chunks and converted to
``OUT`` at the end (see :mod:`~defectscope.inference.writers`); ``resume`` continues a killed job
and ``shard`` keeps one machine's part of the inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from defectscope.core.atomic_io import atomic_write_bytes
from defectscope.core.errors import ConfigError, RunFolderError
from defectscope.core.files import prepare_output_folder
from defectscope.inference.classifier import Classifier, Prediction, PredictionBatch, load_model
from defectscope.inference.detector import (
    Detection,
    Detector,
    boxes_png,
    check_tta_fits,
    load_detector,
)
from defectscope.inference.explain import overlay_png
from defectscope.inference.model_files import model_task
from defectscope.inference.sources import Shard, SourceItem, stream_sources
from defectscope.inference.writers import FORMATS, PredictionWriter, partial_path, skip_scored
from defectscope.models.detector import check_nms_iou


@dataclass
class JobSummary:
    """What a prediction job did. ``rows`` counts every row of the results, including a row per
    source that gave no image (``missing_sources``: a missing file, an empty folder...)."""

    rows: int = 0
    predicted: int = 0
    missing_sources: int = 0
    heatmaps: int = 0
    drawings: int = 0  # pictures of images with their boxes (a detector's draw_dir)
    box_confidence: float | None = None  # a detector's: the least confidence of a box kept
    out: Path | None = None
    already_complete: bool = False

    @property
    def images(self) -> int:
        return self.rows - self.missing_sources

    @property
    def failed(self) -> int:
        return self.images - self.predicted

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "images": self.images,
            "predicted": self.predicted,
            "failed": self.failed,
            "missing_sources": self.missing_sources,
            "heatmaps": self.heatmaps,
            "drawings": self.drawings,
            "box_confidence": self.box_confidence,
            "out": str(self.out) if self.out else None,
            "already_complete": self.already_complete,
        }


def check_output(out: Path | None, resume: bool) -> None:
    """Refuse an output path that cannot be written before any image is scored."""
    if out is None:
        if resume:
            raise ConfigError("resume needs an output file (the results it continues)")
        return
    if out.is_dir():
        raise RunFolderError(f"{out}: is a folder; give a file name such as {out / 'results.csv'}")
    if out.suffix not in FORMATS:
        raise ConfigError(f"output must end in one of {', '.join(FORMATS)}, got {str(out)!r}")
    if out.parent.exists() and not out.parent.is_dir():
        raise RunFolderError(f"{out.parent}: not a folder, so {out.name} cannot be written there")


def _is_heatmap(path: Path) -> bool:
    return path.name.endswith("_gradcam.png") or ".tmp-" in path.name


def _is_drawing(path: Path) -> bool:
    return path.name.endswith("_boxes.png") or ".tmp-" in path.name


class _NameKeeper:
    """``<stem><suffix>`` in ``folder``, one distinct name per image (same stems get a number)."""

    def __init__(self, folder: Path, suffix: str) -> None:
        self.folder, self.suffix, self.used = folder, suffix, set()

    def path_for(self, image: str) -> Path:
        name = f"{Path(image).stem}{self.suffix}"
        if name in self.used:
            name = f"{Path(image).stem}_{len(self.used)}{self.suffix}"
        self.used.add(name)
        return self.folder / name


def _draw(detection: Detection, names: _NameKeeper) -> int:
    """The image with its boxes, into ``names``' folder; 0 when it could not be read."""
    if not detection.ok:
        return 0
    atomic_write_bytes(names.path_for(detection.path), boxes_png(detection))
    return 1


class _HeatmapWriter:
    """``<stem>_gradcam.png`` overlays of the predicted images, one name per image."""

    def __init__(self, classifier: Classifier, folder: Path) -> None:
        self.classifier, self.names = classifier, _NameKeeper(folder, "_gradcam.png")

    def write(self, batch: PredictionBatch) -> int:
        if not len(batch.images):
            return 0
        maps = self.classifier.explain(batch.images)
        for path, image, heatmap in zip(batch.ok_paths, batch.images, maps, strict=True):
            atomic_write_bytes(self.names.path_for(path), overlay_png(image, heatmap))
        return len(maps)


def _counted(items: Iterable[SourceItem], summary: JobSummary) -> Iterator[SourceItem]:
    for item in items:
        summary.missing_sources += isinstance(item, tuple)
        yield item


def _first_image(items: Iterator[SourceItem]) -> tuple[bool, Iterator[SourceItem]]:
    """Whether ``items`` hold an image path at all, and the same items again: a model is
    loaded only once one turns up (an empty folder or a missing file costs no model load)."""
    leading: list[SourceItem] = []
    first = next(items, None)
    while isinstance(first, tuple):
        leading.append(first)
        first = next(items, None)
    return first is not None, itertools.chain(leading, [] if first is None else [first], items)


Model = Classifier | Detector | str | Path


def model_kind(model: Model) -> str:
    """``classify`` or ``detect``, from a loaded model or a model's metadata."""
    if isinstance(model, Classifier | Detector):
        return "detect" if isinstance(model, Detector) else "classify"
    return model_task(model)


def _batches(
    model: Model,
    items: Iterator[SourceItem],
    batch_size: int,
    top_k: int,
    confidence: float | None,
    nms_iou: float | None,
    tta: bool = False,
) -> Iterator[tuple[Classifier | Detector | None, list, PredictionBatch | None]]:
    """``(model, results, batch)`` per batch of inputs: predictions with their batch (for
    heatmaps), or detections."""
    found, items = _first_image(items)
    detect = model_kind(model) == "detect"
    if not found:
        result = Detection if detect else Prediction
        yield None, [result(path=source, error=error) for source, error in items], None
        return
    if detect:
        detector = model if isinstance(model, Detector) else load_detector(model, nms_iou, tta)
        results = detector.detect(items, batch_size, confidence)
        while chunk := list(itertools.islice(results, batch_size)):
            yield detector, chunk, None
        return
    classifier = model if isinstance(model, Classifier) else load_model(model)
    for batch in classifier.iter_batches(items, batch_size, top_k):
        yield classifier, batch.predictions, batch


# option -> (the model kind that uses it, its command-line flag)
_OPTION_USERS = {
    "explain_dir": ("classify", "--explain"),
    "draw_dir": ("detect", "--draw"),
    "nms_iou": ("detect", "--iou"),
    "tta": ("detect", "--tta"),
}
_KIND_NAMES = {"classify": "classifier", "detect": "detector"}


def check_options_fit(task: str, **options) -> None:
    """Refuse an option the model cannot use (a classifier's heatmaps, a detector's boxes)
    rather than ignore it."""
    for name, value in options.items():
        needed, flag = _OPTION_USERS[name]
        if value is not None and value is not False and value != "" and task != needed:
            raise ConfigError(
                f"{name} ({flag}) = {str(value)!r} needs a {_KIND_NAMES[needed]}; "
                f"this model is a {_KIND_NAMES[task]}"
            )


def _checked_task(
    model, batch_size, nms_iou, explain_dir, draw_dir, overwrite: bool, tta: bool = False
) -> str:
    """The model's task once the job's options are checked against it and its output folders
    are ready; a ConfigError naming the bad option before anything is written."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    if nms_iou is not None:
        check_nms_iou(nms_iou)
        if isinstance(model, Detector):
            raise ConfigError("a loaded detector keeps its nms_iou: load_detector(path, nms_iou)")
    check_tta_fits(model, tta)
    task = model_kind(model)
    check_options_fit(task, explain_dir=explain_dir, draw_dir=draw_dir, nms_iou=nms_iou, tta=tta)
    if explain_dir:
        prepare_output_folder(explain_dir, "heatmaps", _is_heatmap, overwrite)
    if draw_dir:
        prepare_output_folder(draw_dir, "box pictures", _is_drawing, overwrite)
    return task


def _record(result, writer: PredictionWriter | None, summary: JobSummary, on_prediction) -> None:
    """One row: written, counted and shown to ``on_prediction``."""
    if writer is not None:
        writer.add(result)
    summary.rows += 1
    summary.predicted += result.ok
    if on_prediction is not None:
        on_prediction(result)


def predict_files(
    model: Model,
    sources: Iterable[str | Path] = (),
    paths_from: Iterable[str | Path] = (),
    *,
    out: str | Path | None = None,
    resume: bool = False,
    shard: Shard = Shard(),
    batch_size: int = 32,
    top_k: int = 3,
    explain_dir: str | Path | None = None,
    on_prediction: Callable[[Prediction | Detection], None] | None = None,
    overwrite: bool = False,
    confidence: float | None = None,
    draw_dir: str | Path | None = None,
    nms_iou: float | None = None,
    tta: bool = False,
) -> JobSummary:
    """Predict files, folders (recursive), globs and listed paths, in input order, with a
    loaded :class:`Classifier` or :class:`Detector`, or a model path (loaded once an image
    turns up). A detector's rows are :class:`Detection` objects (boxes at least ``confidence``
    confident, by default the one chosen when it was trained; ``nms_iou`` replaces a detector
    path's saved NMS IoU threshold; ``tta`` loads it with test-time flips);
    ``draw_dir`` gets a picture of each image with its boxes, ``explain_dir`` (a classifier) a
    Grad-CAM overlay.

    A file that cannot be read gets a row with its error; the rest go on. With ``out`` the rows
    go to a results file (.csv, .json, .jsonl, .parquet) that appears only when complete;
    ``resume`` continues a killed job from ``OUT.partial``. ``on_prediction`` sees every row.
    """
    out = Path(out) if out is not None else None
    check_output(out, resume)
    if resume and out.is_file() and not partial_path(out).is_file():
        return JobSummary(out=out, already_complete=True)
    task = _checked_task(model, batch_size, nms_iou, explain_dir, draw_dir, overwrite, tta)
    summary = JobSummary(out=out)
    writer = PredictionWriter(out, task=task) if out is not None else None
    items = _counted(stream_sources(sources, paths_from, shard), summary)
    if writer is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        items = skip_scored(items, writer.start(resume))
    heatmaps: _HeatmapWriter | None = None
    drawings: _NameKeeper | None = None
    try:
        batches = _batches(model, iter(items), batch_size, top_k, confidence, nms_iou, tta)
        for loaded, results, batch in batches:
            if isinstance(loaded, Detector):
                summary.box_confidence = loaded.box_confidence if confidence is None else confidence
            for result in results:
                _record(result, writer, summary, on_prediction)
            if explain_dir and isinstance(loaded, Classifier):
                heatmaps = heatmaps or _HeatmapWriter(loaded, Path(explain_dir))
                summary.heatmaps += heatmaps.write(batch)
            if draw_dir and isinstance(loaded, Detector):
                drawings = drawings or _NameKeeper(Path(draw_dir), "_boxes.png")
                summary.drawings += sum(_draw(result, drawings) for result in results)
    except BaseException:
        if writer is not None:
            writer.flush()  # what was scored survives for --resume
        raise
    if writer is not None:
        writer.finish()
        summary.rows, summary.predicted = writer.counts["rows"], writer.counts["predicted"]
    return summary
