"""Write prediction results in chunks (CSV, JSON, JSON Lines or Parquet), resumable after a kill.

Rows are appended as JSON Lines to ``OUT.partial`` and flushed to disk every ``chunk_rows``
rows; only when the run ends is the partial file converted, streaming, into ``OUT``'s format
and renamed into place. So ``OUT`` is complete or absent, never half written, and a killed run
continues where its partial file ends (``predict --resume``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from defectscope.core.atomic_io import atomic_path
from defectscope.core.errors import ConfigError, DefectscopeError
from defectscope.core.spreadsheet import safe_row
from defectscope.inference.classifier import Prediction
from defectscope.inference.detector import Detection
from defectscope.inference.sources import SourceItem

CSV_COLUMNS = (
    "path",
    "label",
    "confidence",
    "top_k",
    "defect",
    "defect_score",
    "unknown",
    "unknown_score",
    "error",
)
BOX_COLUMNS = ("path", "label", "confidence", "xmin", "ymin", "xmax", "ymax", "error")
FORMATS = (".csv", ".json", ".jsonl", ".parquet")
log = logging.getLogger(__name__)


class ResumeError(DefectscopeError, ValueError):
    """A partial result file that does not match the inputs it is resumed with."""


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _read_partial(partial: Path) -> Iterator[dict]:
    """Complete rows of a partial file; a torn last line (killed mid-write) is cut off."""
    if not partial.is_file():
        return
    good_bytes = 0
    with open(partial, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                break
            good_bytes += len(line)
            yield row
    if good_bytes != partial.stat().st_size:
        log.info("%s: cutting a torn last row", partial)
        os.truncate(partial, good_bytes)


def _item_key(item: SourceItem | str) -> str:
    return item[0] if isinstance(item, tuple) else str(item)


def skip_scored(items: Iterable[SourceItem], scored: Iterator[dict]) -> Iterator[SourceItem]:
    """Drop the leading ``items`` already in ``scored`` (same paths, same order); the rest.

    Checked now, not when the result is drawn: a mismatch raises :class:`ResumeError` here.
    """
    items = iter(items)
    for row in scored:
        item = next(items, None)
        if item is None or _item_key(item) != row["path"]:
            found = "the end of the inputs" if item is None else repr(_item_key(item))
            raise ResumeError(
                f"the partial results list {row['path']!r} where the inputs now give {found}; "
                "the inputs changed since the killed run: start again without --resume"
            )
    return items


class PredictionWriter:
    """Append results to ``OUT.partial`` in chunks, one row per image; :meth:`finish` writes
    ``OUT``. ``task`` ``detect``: results are detections, and CSV and Parquet get one row per
    box (an image without a box: one row with an empty label)."""

    def __init__(self, out: str | Path, chunk_rows: int = 1000, task: str = "classify") -> None:
        self.out = Path(out)
        self.task = task
        if self.out.suffix not in FORMATS:
            raise ConfigError(f"output must end in one of {FORMATS}, got {str(self.out)!r}")
        self.partial = partial_path(self.out)
        self.chunk_rows = chunk_rows
        self.counts = {"rows": 0, "predicted": 0}
        self._pending: list[str] = []

    def start(self, resume: bool) -> Iterator[dict]:
        """Begin a run: with ``resume`` the rows already scored (stream them to skip inputs)."""
        if not resume:
            if self.partial.exists():
                log.info("%s: discarding the partial results of an earlier run", self.partial)
                self.partial.unlink()
            return iter(())
        return self._counted(_read_partial(self.partial))

    def _counted(self, rows: Iterator[dict]) -> Iterator[dict]:
        for row in rows:
            self.counts["rows"] += 1
            self.counts["predicted"] += not row["error"]
            yield row

    def add(self, prediction: Prediction | Detection) -> None:
        self._pending.append(json.dumps(prediction.to_dict(), ensure_ascii=False) + "\n")
        self.counts["rows"] += 1
        self.counts["predicted"] += prediction.ok
        if len(self._pending) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Append the pending rows and make them durable."""
        if not self._pending:
            return
        with open(self.partial, "a", encoding="utf-8") as handle:
            handle.writelines(self._pending)
            handle.flush()
            os.fsync(handle.fileno())
        self._pending.clear()

    def finish(self) -> Path:
        """Convert the partial rows into ``OUT`` (atomically) and remove the partial file."""
        self.flush()
        self.partial.touch()
        with atomic_path(self.out) as temporary:
            rows = _read_partial(self.partial)
            if self.task == "detect" and self.out.suffix in (".csv", ".parquet"):
                _BOX_CONVERTERS[self.out.suffix](rows, temporary)
            else:
                _CONVERTERS[self.out.suffix](rows, temporary)
        self.partial.unlink()
        return self.out


def _write_jsonl(rows: Iterator[dict], target: Path) -> None:
    with open(target, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_json(rows: Iterator[dict], target: Path) -> None:
    with open(target, "w", encoding="utf-8") as handle:
        handle.write("[")
        for index, row in enumerate(rows):
            handle.write(("," if index else "") + "\n  " + json.dumps(row, ensure_ascii=False))
        handle.write("\n]\n")


def _write_csv(rows: Iterator[dict], target: Path) -> None:
    with open(target, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            top = ";".join(f"{t['label']}:{t['probability']:.6f}" for t in row["top_k"])
            cells = {
                **row,
                "top_k": top,
                "confidence": "" if row["error"] else f"{row['confidence']:.6f}",
                "defect": _flag(row.get("defect")),
                "defect_score": _number(row.get("defect_score")),
                "unknown": "" if row["error"] else _flag(row.get("unknown")),
                "unknown_score": _number(row.get("unknown_score")),
            }
            writer.writerow(safe_row([cells.get(column, "") for column in CSV_COLUMNS]))


def _flag(value: bool | None) -> str:
    return "" if value is None else str(bool(value)).lower()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _write_parquet(rows: Iterator[dict], target: Path, group_rows: int = 10_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    top = pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float64())]))
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("confidence", pa.float64()),
            ("top_k", top),
            ("defect", pa.bool_()),
            ("defect_score", pa.float64()),
            ("unknown", pa.bool_()),
            ("unknown_score", pa.float64()),
            ("error", pa.string()),
        ]
    )
    with pq.ParquetWriter(str(target), schema) as writer:
        group: list[dict] = []
        for row in rows:
            group.append({**row, "confidence": None if row["error"] else row["confidence"]})
            if len(group) >= group_rows:
                writer.write_table(pa.Table.from_pylist(group, schema))
                group.clear()
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema))


_CONVERTERS = {
    ".csv": _write_csv,
    ".json": _write_json,
    ".jsonl": _write_jsonl,
    ".parquet": _write_parquet,
}


def _box_rows(rows: Iterator[dict]) -> Iterator[dict]:
    """One row per box of each image's detections; one empty row for an image without."""
    for row in rows:
        if not row["boxes"]:
            yield {"path": row["path"], "label": "", "error": row["error"]}
        for box in row["boxes"]:
            yield {"path": row["path"], **box, "error": row["error"]}


def _write_box_csv(rows: Iterator[dict], target: Path) -> None:
    with open(target, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(BOX_COLUMNS)
        for row in _box_rows(rows):
            cells = {k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()}
            writer.writerow(safe_row([cells.get(column, "") for column in BOX_COLUMNS]))


def _write_box_parquet(rows: Iterator[dict], target: Path, group_rows: int = 10_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    numbers = [(name, pa.float64()) for name in BOX_COLUMNS[2:7]]
    schema = pa.schema(
        [("path", pa.string()), ("label", pa.string()), *numbers, ("error", pa.string())]
    )
    with pq.ParquetWriter(str(target), schema) as writer:
        group: list[dict] = []
        for row in _box_rows(rows):
            group.append(row)
            if len(group) >= group_rows:
                writer.write_table(pa.Table.from_pylist(group, schema))
                group.clear()
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema))


_BOX_CONVERTERS = {".csv": _write_box_csv, ".parquet": _write_box_parquet}


def write_predictions(predictions: Sequence[Prediction], path: str | Path) -> Path:
    """All ``predictions`` to ``path`` (.csv, .json, .jsonl or .parquet) in one go."""
    writer = PredictionWriter(path)
    writer.start(resume=False)
    for prediction in predictions:
        writer.add(prediction)
    return writer.finish()
