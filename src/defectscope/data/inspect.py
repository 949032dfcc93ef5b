"""``defectscope inspect``: statistics, problems and a sample grid of a dataset or TFRecords."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from defectscope.core.atomic_io import atomic_path
from defectscope.core.errors import FileError
from defectscope.core.files import check_regular_file, file_sha256
from defectscope.core.text import plural
from defectscope.data.discovery import discover_dataset
from defectscope.data.images import decode_image_tensor
from defectscope.data.layout import DatasetIndex, Problem, worst_per_path
from defectscope.data.pipeline import is_tfrecord_folder, read_manifest
from defectscope.data.records import iter_records
from defectscope.data.tfdata import record_dataset
from defectscope.data.tfrecord_features import ImageRecord, example_to_record
from defectscope.data.tfrecord_writer import MANIFEST_NAME


@dataclass
class DatasetReport:
    """What ``inspect`` found; :meth:`format` renders it for a terminal or a log."""

    path: str
    kind: str
    classes: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images
    image_sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    boxes_per_image: Counter = field(default_factory=Counter)  # n boxes -> images
    problems: list[Problem] = field(default_factory=list)
    samples: dict[str, list[ImageRecord]] = field(default_factory=dict)  # for the grid

    @property
    def num_boxes(self) -> int:
        return sum(n * images for n, images in self.boxes_per_image.items())

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "kind": self.kind,
            "classes": self.classes,
            "counts": self.counts,
            "image_sizes": {f"{w}x{h}": n for (w, h), n in sorted(self.image_sizes.items())},
            "boxes_per_image": dict(sorted(self.boxes_per_image.items())),
            "num_boxes": self.num_boxes,
            "problems": [p.to_dict() for p in self.problems],
        }

    def format(self, max_problems_per_kind: int = 5) -> str:
        lines = [f"{self.path} ({self.kind}), {len(self.classes)} classes"]
        splits = list(self.counts)
        width = max([len(c) for c in self.classes] + [5])
        lines.append("  " + "class".ljust(width) + "".join(f"{s:>12}" for s in splits))
        for name in self.classes:
            row = "".join(f"{self.counts[s].get(name, 0):>12}" for s in splits)
            lines.append("  " + name.ljust(width) + row)
        totals = "".join(f"{sum(self.counts[s].values()):>12}" for s in splits)
        lines.append("  " + "total".ljust(width) + totals)
        sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in self.image_sizes.most_common(5))
        lines.append(f"image sizes: {sizes or 'none'}")
        if self.boxes_per_image:
            spread = ", ".join(f"{k}: {v}" for k, v in sorted(self.boxes_per_image.items()))
            lines.append(f"boxes: {self.num_boxes} in all; images by box count: {spread}")
        by_kind: dict[str, list[Problem]] = defaultdict(list)
        shown = worst_per_path(self.problems)  # each file once, with its worst problem
        for problem in shown:
            by_kind[problem.kind].append(problem)
        every = "" if len(shown) == len(self.problems) else f" ({len(self.problems)} in --json)"
        lines.append(f"problems: {plural(len(shown), 'file')}{every}")
        for kind, items in sorted(by_kind.items()):
            lines.append(f"  {kind} ({items[0].severity}): {len(items)}")
            for problem in items[:max_problems_per_kind]:
                lines.append(f"    {problem.path}: {problem.message}")
            if len(items) > max_problems_per_kind:
                lines.append(f"    ... and {len(items) - max_problems_per_kind} more")
        return "\n".join(lines)


def _recorded_problems(manifest: dict, folder: Path) -> list[Problem]:
    problems = []
    for values in manifest.get("problems", []):
        try:
            problems.append(Problem(**values))
        except TypeError:
            problems.append(
                Problem(
                    str(folder / MANIFEST_NAME), "bad_manifest", f"unreadable problem {values!r}"
                )
            )
    return problems


def _shard_problem(path: Path, shard: dict) -> Problem | None:
    """Why a shard cannot be read as the manifest describes it (None when it can)."""
    try:
        check_regular_file(path, shard["num_bytes"], root=path.parent)
    except FileError as err:
        return Problem(str(path), "missing_shard", err.reason, "error")
    if file_sha256(path) != shard["sha256"]:
        return Problem(str(path), "corrupt_shard", "sha256 differs from the manifest", "error")
    return None


def _tfrecord_records(folder: Path, report: DatasetReport) -> Iterator[tuple[str, ImageRecord]]:
    manifest = read_manifest(folder)
    report.problems.extend(_recorded_problems(manifest, folder))
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            path = folder / shard["file"]
            if problem := _shard_problem(path, shard):
                report.problems.append(problem)
                continue
            for serialized in record_dataset([str(path)]).as_numpy_iterator():
                yield split, example_to_record(serialized)


def _folder_records(index: DatasetIndex, report: DatasetReport, workers: int):
    report.problems.extend(index.problems)
    for split, samples in index.samples.items():
        loaded = iter_records(samples, index.label_map(), workers, root=index.root)
        for _sample, record, problems in loaded:
            report.problems.extend(problems)
            if record is not None:
                yield split, record


def inspect_path(
    path: str | Path, samples_per_class: int = 4, workers: int = 2, seed: int = 0
) -> DatasetReport:
    """Read every image (and box) of a dataset root or TFRecord folder and summarise it."""
    path = Path(path)
    if is_tfrecord_folder(path):
        manifest = read_manifest(path)
        report = DatasetReport(str(path), "tfrecords", list(manifest["classes"]))
        records = _tfrecord_records(path, report)
    else:
        index = discover_dataset(path)
        report = DatasetReport(str(path), f"dataset ({index.layout})", index.classes)
        records = _folder_records(index, report, workers)
    rng = random.Random(seed)
    seen: Counter[str] = Counter()
    for split, record in records:
        report.counts.setdefault(split, {c: 0 for c in report.classes})
        report.counts[split][record.class_text] = report.counts[split].get(record.class_text, 0) + 1
        report.image_sizes[(record.width, record.height)] += 1
        report.boxes_per_image[len(record.boxes)] += 1
        bucket = report.samples.setdefault(record.class_text, [])
        seen[record.class_text] += 1
        if len(bucket) < samples_per_class:  # reservoir sampling: a fair pick in one pass
            bucket.append(record)
        elif (slot := rng.randrange(seen[record.class_text])) < samples_per_class:
            bucket[slot] = record
    return report


def render_grid(report: DatasetReport, out_path: str | Path, tile: int = 160) -> Path:
    """Write a PNG grid: a row per class, a random sample of its images with their boxes
    drawn, labelled with how many of the class's images it shows."""
    columns = max((len(v) for v in report.samples.values()), default=1)
    label_width, rows = 150, max(len(report.classes), 1)
    grid = Image.new("RGB", (label_width + columns * tile, rows * tile), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=14)
    for row, name in enumerate(report.classes):
        shown = len(report.samples.get(name, []))
        total = sum(counts.get(name, 0) for counts in report.counts.values())
        label = f"{name}\n{shown} of {plural(total, 'image')}"
        draw.multiline_text((6, row * tile + tile // 2 - 16), label, fill="black", font=font)
        for col, record in enumerate(report.samples.get(name, [])):
            pixels = np.asarray(decode_image_tensor(record.encoded))
            image = Image.fromarray(pixels).resize((tile - 4, tile - 4))
            x0, y0 = label_width + col * tile + 2, row * tile + 2
            grid.paste(image, (x0, y0))
            for box in record.boxes:
                corners = [
                    x0 + box.xmin * (tile - 4),
                    y0 + box.ymin * (tile - 4),
                    x0 + box.xmax * (tile - 4),
                    y0 + box.ymax * (tile - 4),
                ]
                draw.rectangle(corners, outline=(255, 40, 40), width=2)
    with atomic_path(out_path) as temp:
        grid.save(temp, format="PNG")
    return Path(out_path)
