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

import numpy as np

from defectscope.core.atomic_io import atomic_write_bytes
from defectscope.core.errors import ConfigError, RunFolderError
from defectscope.core.files import prepare_output_folder
from defectscope.inference.classifier import Classifier, Prediction, PredictionBatch, load_model
from defectscope.inference.explain import overlay_png
from defectscope.inference.sources import Shard, SourceItem, stream_sources
from defectscope.inference.writers import FORMATS, PredictionWriter, partial_path, skip_scored


@dataclass
class JobSummary:
    """What a prediction job did. ``rows`` counts every row of the results, including a row per
    source that gave no image (``missing_sources``: a missing file, an empty folder...)."""

    rows: int = 0
    predicted: int = 0
    missing_sources: int = 0
    heatmaps: int = 0
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


class _HeatmapWriter:
    """``<stem>_gradcam.png`` overlays of the predicted images, one name per image."""

    def __init__(self, classifier: Classifier, folder: Path) -> None:
        self.classifier, self.folder = classifier, folder
        self.used: set[str] = set()

    def write(self, batch: PredictionBatch) -> int:
        if not len(batch.images):
            return 0
        maps = self.classifier.explain(batch.images)
        for path, image, heatmap in zip(batch.ok_paths, batch.images, maps, strict=True):
            name = f"{Path(path).stem}_gradcam.png"
            if name in self.used:  # the same stem in two folders
                name = f"{Path(path).stem}_{len(self.used)}_gradcam.png"
            self.used.add(name)
            atomic_write_bytes(self.folder / name, overlay_png(image, heatmap))
        return len(maps)


def _counted(items: Iterable[SourceItem], summary: JobSummary) -> Iterator[SourceItem]:
    for item in items:
        summary.missing_sources += isinstance(item, tuple)
        yield item


def _batches(
    model: Classifier | str | Path, items: Iterator[SourceItem], batch_size: int, top_k: int
) -> Iterator[tuple[Classifier | None, PredictionBatch]]:
    """Prediction batches; the model is loaded only once an image path turns up, so sources
    that hold no image (an empty folder, a missing file) cost no model load."""
    leading: list[tuple[str, str]] = []
    first = next(items, None)
    while isinstance(first, tuple):
        leading.append(first)
        first = next(items, None)
    if first is None:
        rows = [Prediction(path=source, error=error) for source, error in leading]
        yield None, PredictionBatch(rows, np.zeros((0, 1, 1, 3), np.float32))
        return
    classifier = model if isinstance(model, Classifier) else load_model(model)
    for batch in classifier.iter_batches(
        itertools.chain(leading, [first], items), batch_size, top_k
    ):
        yield classifier, batch


def predict_files(
    model: Classifier | str | Path,
    sources: Iterable[str | Path] = (),
    paths_from: Iterable[str | Path] = (),
    *,
    out: str | Path | None = None,
    resume: bool = False,
    shard: Shard = Shard(),
    batch_size: int = 32,
    top_k: int = 3,
    explain_dir: str | Path | None = None,
    on_prediction: Callable[[Prediction], None] | None = None,
    overwrite: bool = False,
) -> JobSummary:
    """Predict files, folders (recursive), globs and listed paths, in input order, with a
    loaded :class:`Classifier` or a model path (loaded once an image turns up).

    A file that cannot be read gets a row with its error; the rest go on. With ``out`` the rows
    go to a results file (.csv, .json, .jsonl, .parquet) that appears only when complete;
    ``resume`` continues a killed job from ``OUT.partial``. ``on_prediction`` sees every row.
    """
    out = Path(out) if out is not None else None
    check_output(out, resume)
    if resume and out.is_file() and not partial_path(out).is_file():
        return JobSummary(out=out, already_complete=True)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    if explain_dir:
        prepare_output_folder(explain_dir, "heatmaps", _is_heatmap, overwrite)
    summary = JobSummary(out=out)
    writer = PredictionWriter(out) if out is not None else None
    items = _counted(stream_sources(sources, paths_from, shard), summary)
    if writer is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        items = skip_scored(items, writer.start(resume))
    heatmaps: _HeatmapWriter | None = None
    try:
        for classifier, batch in _batches(model, iter(items), batch_size, top_k):
            for prediction in batch.predictions:
                if writer is not None:
                    writer.add(prediction)
                summary.rows += 1
                summary.predicted += prediction.ok
                if on_prediction is not None:
                    on_prediction(prediction)
            if explain_dir and classifier is not None:
                heatmaps = heatmaps or _HeatmapWriter(classifier, Path(explain_dir))
                summary.heatmaps += heatmaps.write(batch)
    except BaseException:
        if writer is not None:
            writer.flush()  # what was scored survives for --resume
        raise
    if writer is not None:
        writer.finish()
        summary.rows, summary.predicted = writer.counts["rows"], writer.counts["predicted"]
    return summary
