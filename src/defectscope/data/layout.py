"""Dataset discovery: find splits, classes, images and their VOC files, and report oddities.

Two layouts are recognised:

* Kaggle NEU-DET: ``ROOT/<split>/images/<class>/*`` with ``ROOT/<split>/annotations/<stem>.xml``;
* one folder per class: ``ROOT/<class>/*`` (no annotations, no split). Images are assigned to
  ``train`` / ``validation`` by a stable hash of their relative path, so adding files never moves
  the others.

Images and annotations are paired by file stem, never by the XML ``<filename>``. Discovery reads
directory entries only; decoding is :mod:`defectscope.data.records`' job.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from defectscope.core.errors import ConfigError, FileError
from defectscope.core.files import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_XML_BYTES,
    check_regular_file,
)
from defectscope.data.images import is_image_path

LAYOUT_KAGGLE = "kaggle"
LAYOUT_CLASS_FOLDERS = "class-folders"
HASH_SPLIT_BUCKETS = 10_000


class DatasetLayoutError(FileError):
    """No dataset layout could be recognised at the given root."""


@dataclass(frozen=True)
class Problem:
    """Something odd about one file. ``severity``: error (file skipped), warning or info."""

    path: str
    kind: str
    message: str
    severity: str = "warning"

    def to_dict(self) -> dict:
        return asdict(self)


SEVERITY_RANK = {"error": 2, "warning": 1, "info": 0}


def worst_per_path(problems: list[Problem]) -> list[Problem]:
    """One problem per file, its worst (an unreadable image is not also "used without boxes");
    in the order the files were first reported."""
    worst: dict[str, Problem] = {}
    for problem in problems:
        kept = worst.get(problem.path)
        if kept is None or SEVERITY_RANK[problem.severity] > SEVERITY_RANK[kept.severity]:
            worst[problem.path] = problem
    return list(worst.values())


@dataclass(frozen=True)
class Sample:
    """One image of the dataset with its class and (optional) annotation file."""

    split: str
    class_name: str
    image_path: Path
    annotation_path: Path | None
    source_id: str  # path relative to the dataset root, POSIX style


@dataclass
class DatasetIndex:
    """What discovery found: classes in label order, samples per split, and problems."""

    root: Path
    layout: str
    classes: list[str]
    samples: dict[str, list[Sample]]
    problems: list[Problem] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return list(self.samples)

    def label_map(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.classes)}


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a symlink loop, say: not a folder (it is reported as a file)
        return False


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if _is_folder(p) and not p.name.startswith("."))


def _kaggle_split_dirs(root: Path) -> list[Path]:
    return [
        d for d in _visible_dirs(root) if (d / "images").is_dir() and _visible_dirs(d / "images")
    ]


def _has_class_folders(root: Path) -> bool:
    return any(is_image_path(f) for d in _visible_dirs(root) for f in d.iterdir())


def _walk_files(folder: Path) -> list[Path]:
    """Every entry below ``folder`` that is not a folder (files, symlinks, FIFOs, devices: each
    is checked before it is read), sorted; symlinked folders are not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in filenames)
    return sorted(found)


class _Scanner:
    """Collects samples and problems while walking one dataset root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []

    def report(self, path: Path, kind: str, message: str, severity: str = "warning") -> None:
        self.problems.append(Problem(str(path), kind, message, severity))

    def readable(self, path: Path, max_bytes: int) -> bool:
        """Report a path that is not a regular file of bounded size inside the root (FIFO,
        device, symlink loop or escape, too large); True for a file worth reading."""
        try:
            check_regular_file(path, max_bytes, self.root)
        except FileError as err:
            kind = "outside_root" if "leaves the folder" in err.reason else "unreadable_file"
            self.report(path, kind, err.reason, "error")
            return False
        return True

    def usable_image(self, path: Path) -> bool:
        """Report hidden, non-image and unreadable files; True for a file worth decoding."""
        if path.name.startswith("."):
            self.report(path, "hidden_file", "hidden file ignored", "error")
            return False
        if not is_image_path(path):
            self.report(path, "not_an_image", f"unsupported extension {path.suffix!r}", "error")
            return False
        return self.readable(path, DEFAULT_MAX_IMAGE_BYTES)

    def class_images(self, class_dirs: list[Path]) -> dict[str, list[Path]]:
        images: dict[str, list[Path]] = {}
        for class_dir in class_dirs:
            images[class_dir.name] = [f for f in _walk_files(class_dir) if self.usable_image(f)]
        return images

    def stray_files(self, folder: Path, what: str) -> None:
        for entry in sorted(folder.iterdir()):
            if not _is_folder(entry) and not entry.name.startswith("."):
                self.report(entry, "stray_file", f"file outside any {what} folder ignored", "error")

    def annotations(self, folder: Path) -> dict[str, Path]:
        by_stem: dict[str, Path] = {}
        if not folder.is_dir():
            return by_stem
        for path in _walk_files(folder):
            if path.name.startswith("."):
                self.report(path, "hidden_file", "hidden file ignored", "error")
            elif path.suffix.lower() != ".xml":
                self.report(path, "not_an_annotation", "not an .xml file; ignored", "error")
            elif self.readable(path, DEFAULT_MAX_XML_BYTES):
                by_stem[path.stem] = path
        return by_stem

    def source_id(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _scan_kaggle(scanner: _Scanner, split_dirs: list[Path]) -> tuple[list[str], dict]:
    per_split_images = {}
    for split_dir in split_dirs:
        scanner.stray_files(split_dir / "images", "class")
        per_split_images[split_dir.name] = scanner.class_images(_visible_dirs(split_dir / "images"))
    classes = sorted({name for images in per_split_images.values() for name in images})
    samples: dict[str, list[Sample]] = {}
    for split_dir in split_dirs:
        split, images = split_dir.name, per_split_images[split_dir.name]
        for missing in sorted(set(classes) - set(images)):
            scanner.report(
                split_dir / "images" / missing, "missing_class", f"no {missing!r} folder"
            )
        annotations = scanner.annotations(split_dir / "annotations")
        stems: dict[str, list[Path]] = defaultdict(list)
        for paths in images.values():
            for path in paths:
                stems[path.stem].append(path)
        for stem, paths in sorted(stems.items()):
            if len(paths) > 1:
                names = ", ".join(scanner.source_id(p) for p in paths)
                scanner.report(
                    paths[0], "ambiguous_stem", f"images share the stem {stem!r}: {names}"
                )
        split_samples = []
        for class_name, paths in sorted(images.items()):
            for path in paths:
                xml = annotations.get(path.stem) if len(stems[path.stem]) == 1 else None
                if xml is None:
                    scanner.report(
                        path, "missing_annotation", "no annotation; image used without boxes"
                    )
                split_samples.append(Sample(split, class_name, path, xml, scanner.source_id(path)))
        for stem, xml in sorted(annotations.items()):
            if stem not in stems:
                scanner.report(xml, "orphan_annotation", "annotation without an image", "error")
        samples[split] = split_samples
    return classes, samples


def hash_split(source_id: str, val_fraction: float) -> str:
    """Stable train/validation assignment of one file by the hash of its relative path."""
    digest = hashlib.sha256(source_id.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:4], "big") % HASH_SPLIT_BUCKETS
    return "validation" if bucket < val_fraction * HASH_SPLIT_BUCKETS else "train"


def _scan_class_folders(scanner: _Scanner, val_fraction: float) -> tuple[list[str], dict]:
    scanner.stray_files(scanner.root, "class")
    images = scanner.class_images(_visible_dirs(scanner.root))
    classes = sorted(name for name, paths in images.items() if paths)
    for name in sorted(set(images) - set(classes)):
        scanner.report(scanner.root / name, "empty_class", "folder holds no usable image; ignored")
    samples: dict[str, list[Sample]] = {"train": [], "validation": []}
    for class_name in classes:
        for path in images[class_name]:
            source_id = scanner.source_id(path)
            split = hash_split(source_id, val_fraction)
            samples[split].append(Sample(split, class_name, path, None, source_id))
    return classes, {split: items for split, items in samples.items() if items}


def discover_dataset(root: str | Path, val_fraction: float = 0.2) -> DatasetIndex:
    """Find the layout, classes, samples and file-level problems under ``root``.

    Raises:
        DatasetLayoutError: ``root`` is missing or holds neither layout.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    given = Path(root)
    if not given.is_dir():
        raise DatasetLayoutError(given, "no such directory")
    candidates = [given.resolve()]
    while len(candidates) < 3 and len(children := _visible_dirs(candidates[-1])) == 1:
        candidates.append(children[0])  # also accept a wrapping folder, e.g. archive/NEU-DET
    for current in candidates:
        if split_dirs := _kaggle_split_dirs(current):
            scanner = _Scanner(current)
            classes, samples = _scan_kaggle(scanner, split_dirs)
            return DatasetIndex(current, LAYOUT_KAGGLE, classes, samples, scanner.problems)
    for current in candidates:
        if _has_class_folders(current):
            scanner = _Scanner(current)
            classes, samples = _scan_class_folders(scanner, val_fraction)
            return DatasetIndex(current, LAYOUT_CLASS_FOLDERS, classes, samples, scanner.problems)
    raise DatasetLayoutError(
        given,
        "no dataset layout recognised. Expected ROOT/<split>/images/<class>/<image> "
        "(Kaggle NEU-DET, annotations in ROOT/<split>/annotations/<stem>.xml) or "
        "ROOT/<class>/<image> (one folder per class)",
    )
