"""The batch prediction job: score many images into one results file, resumable and sharded.

Used by ``defectscope predict``, the benchmarks and the kill harness alike. Inputs stream (folder
walks, globs, path lists), predictions are appended to ``OUT.partial`` in chunks and converted to
``OUT`` at the end (see :mod:`~defectscope.inference.writers`); ``resume`` continues a killed job
and ``shard`` keeps one machine's part of the inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from defectscope.core.atomic_io import atomic_write_bytes
from defectscope.core.errors import ConfigError, RunFolderError
from defectscope.core.files import prepare_output_folder
from defectscope.inference.classifier import Classifier, Prediction, PredictionBatch
from defectscope.inference.explain import overlay_png
from defectscope.inference.sources import Shard, stream_sources
from defectscope.inference.writers import FORMATS, PredictionWriter, partial_path, skip_scored


@dataclass
class JobSummary:
    """What a prediction job did."""

    rows: int = 0
    predicted: int = 0
    heatmaps: int = 0
    out: Path | None = None
    already_complete: bool = False

    @property
    def failed(self) -> int:
        return self.rows - self.predicted

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "predicted": self.predicted,
            "failed": self.failed,
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

    def __init__(self, classifier: Classifier, folder: Path, overwrite: bool) -> None:
        self.classifier, self.folder = classifier, folder
        self.used: set[str] = set()
        prepare_output_folder(folder, "heatmaps", _is_heatmap, overwrite)

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


def predict_files(
    classifier: Classifier,
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
    """Predict files, folders (recursive), globs and listed paths, in input order.

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
    writer = PredictionWriter(out) if out is not None else None
    heatmaps = _HeatmapWriter(classifier, Path(explain_dir), overwrite) if explain_dir else None
    summary = JobSummary(out=out)
    items = stream_sources(sources, paths_from, shard)
    if writer is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        items = skip_scored(items, writer.start(resume))
    try:
        for batch in classifier.iter_batches(items, batch_size, top_k):
            for prediction in batch.predictions:
                if writer is not None:
                    writer.add(prediction)
                summary.rows += 1
                summary.predicted += prediction.ok
                if on_prediction is not None:
                    on_prediction(prediction)
            if heatmaps is not None:
                summary.heatmaps += heatmaps.write(batch)
    except BaseException:
        if writer is not None:
            writer.flush()  # what was scored survives for --resume
        raise
    if writer is not None:
        writer.finish()
        summary.rows, summary.predicted = writer.counts["rows"], writer.counts["predicted"]
    return summary
