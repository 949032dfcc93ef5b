"""Sharded, atomic, idempotent TFRecord conversion of a dataset, with its ``manifest.json``.

The manifest is removed first and written last, so a folder with a ``manifest.json`` always
holds a complete conversion: a killed run leaves no manifest (readers refuse the folder) and
only hidden temporaries, which the next run deletes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from defectscope.core.atomic_io import (
    TEMP_MARKER,
    atomic_path,
    atomic_write_json,
    remove_stale_temporaries,
)
from defectscope.core.errors import ConfigError, NothingDoneError
from defectscope.core.files import check_outside, file_sha256, prepare_output_folder
from defectscope.core.progress import progress
from defectscope.core.version import __version__
from defectscope.data.discovery import discover_dataset
from defectscope.data.images import DEFAULT_MAX_PIXELS
from defectscope.data.layout import DatasetIndex, Problem, SplitPlan
from defectscope.data.records import iter_records
from defectscope.data.tfrecord_features import SCHEMA_VERSION, build_example

MANIFEST_NAME = "manifest.json"
SHUFFLE_SEED = 0  # fixed: the same input always gives byte-identical shards
log = logging.getLogger(__name__)


class ConversionError(NothingDoneError):
    """Nothing usable could be converted."""


def is_conversion_file(path: Path) -> bool:
    """A file ``convert`` writes: shards, the manifest, temporaries of a killed run."""
    name = path.name
    return name == MANIFEST_NAME or name.endswith(".tfrecord") or TEMP_MARKER in name


def shard_filename(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _write_split(
    index: DatasetIndex,
    split: str,
    out_dir: Path,
    num_shards: int,
    workers: int,
    max_pixels: int,
    problems: list[Problem],
) -> dict:
    import tensorflow as tf

    samples = list(index.samples[split])
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(samples))
    samples = [samples[i] for i in order]  # classes mixed within every shard
    count = max(1, min(num_shards, len(samples)))
    names = [shard_filename(split, i, count) for i in range(count)]
    records_per_shard = [0] * count
    class_counts: Counter[str] = Counter()
    num_boxes = 0
    with ExitStack() as stack:
        temps = [stack.enter_context(atomic_path(out_dir / name)) for name in names]
        writers = [stack.enter_context(tf.io.TFRecordWriter(str(t))) for t in temps]
        loaded = iter_records(samples, index.label_map(), workers, max_pixels, index.root)
        for _, record, sample_problems in progress(loaded, f"convert {split}", len(samples)):
            problems.extend(sample_problems)
            if record is None:
                continue
            written = sum(records_per_shard)
            serialized = build_example(record).SerializeToString(deterministic=True)  # sorted keys
            writers[written % count].write(serialized)
            records_per_shard[written % count] += 1
            class_counts[record.class_text] += 1
            num_boxes += len(record.boxes)
        for writer in writers:
            writer.close()
    for stale in out_dir.glob(f"{split}-*-of-*.tfrecord"):
        if stale.name not in names:
            stale.unlink()
    return {
        "num_records": sum(records_per_shard),
        "num_boxes": num_boxes,
        "class_counts": {name: class_counts.get(name, 0) for name in index.classes},
        "shards": [
            {
                "file": name,
                "num_records": n,
                "num_bytes": (out_dir / name).stat().st_size,
                "sha256": file_sha256(out_dir / name),
            }
            for name, n in zip(names, records_per_shard, strict=True)
        ],
    }


def convert_dataset(
    data_root: str | Path,
    out_dir: str | Path,
    num_shards: int = 4,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    val_fraction: float = 0.2,
    overwrite: bool = False,
    plan: SplitPlan | None = None,
) -> dict:
    """Convert a dataset root to ``out_dir/<split>-NNNNN-of-NNNNN.tfrecord`` + manifest.

    ``out_dir`` may hold an earlier conversion (replaced); other files are refused unless
    ``overwrite``, and it may not lie inside the dataset. Returns the manifest. Raises
    :class:`DatasetLayoutError` when no layout is recognised and :class:`ConversionError` when
    not a single image could be converted.
    """
    if num_shards < 1:
        raise ConfigError(f"num_shards must be >= 1, got {num_shards!r}")
    workers = workers or os.cpu_count() or 1
    index = discover_dataset(data_root, val_fraction=val_fraction, plan=plan)
    check_outside(Path(out_dir), Path(data_root), "--out", "the dataset (--data)")
    out = prepare_output_folder(out_dir, "TFRecord shards", is_conversion_file, overwrite)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    remove_stale_temporaries(out)
    problems = list(index.problems)
    splits = {
        split: _write_split(index, split, out, num_shards, workers, max_pixels, problems)
        for split in index.splits
    }
    if not any(info["num_records"] for info in splits.values()):
        raise ConversionError(
            f"{data_root}: no image could be converted ({len(problems)} problems)"
        )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "defectscope_version": __version__,
        "source": {"root": str(index.root), "layout": index.layout},
        "classes": index.classes,
        "label_map": index.label_map(),
        "splits": splits,
        "skipped": [
            {"path": p.path, "reason": p.message} for p in problems if p.severity == "error"
        ],
        "problems": [p.to_dict() for p in problems],
    }
    atomic_write_json(out / MANIFEST_NAME, manifest)
    return manifest
