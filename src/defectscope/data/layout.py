"""Dataset discovery: find splits, classes, images and their VOC files, and report oddities.

Two layouts are recognised:

* Kaggle NEU-DET: ``ROOT/<split>/images/<class>/*`` with ``ROOT/<split>/annotations/<stem>.xml``;
* one folder per class: ``ROOT/<class>/*`` (no annotations, no split). Images are assigned to
  ``train`` / ``validation`` by a stratified, seeded split that keeps byte-identical files
  together (:mod:`defectscope.data.splits`); adding files moves almost none of the others.

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
    read_regular_file,
)
from defectscope.data.images import is_image_path
from defectscope.data.splits import SplitItem, folds, holdout, too_small
from defectscope.data.voc import VocAnnotation

LAYOUT_KAGGLE = "kaggle"
LAYOUT_CLASS_FOLDERS = "class-folders"


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
    annotation: VocAnnotation | None = None  # already read (COCO, YOLO); else read the path


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


@dataclass(frozen=True)
class SplitPlan:
    """How a folder-per-class dataset (no split of its own) is split: a stratified validation
    share, or fold ``fold`` of ``folds`` as validation (cross-validation)."""

    val_fraction: float = 0.2
    folds: int = 0
    fold: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ConfigError(f"fold must be in 0..{self.folds - 1}, got {self.fold!r}")

    def validation(self, items: list[SplitItem]) -> set[str]:
        if self.folds:
            return folds(items, self.folds, self.seed)[self.fold]
        return holdout(items, self.val_fraction, self.seed)


def _content_key(path: Path) -> str:
    try:
        return hashlib.sha256(read_regular_file(path, DEFAULT_MAX_IMAGE_BYTES)).hexdigest()
    except FileError:
        return f"unreadable:{path}"  # reported when it is decoded; its own group


def _scan_class_folders(scanner: _Scanner, plan: SplitPlan) -> tuple[list[str], dict]:
    scanner.stray_files(scanner.root, "class")
    images = scanner.class_images(_visible_dirs(scanner.root))
    classes = sorted(name for name, paths in images.items() if paths)
    for name in sorted(set(images) - set(classes)):
        scanner.report(scanner.root / name, "empty_class", "folder holds no usable image; ignored")
    items = [
        SplitItem(scanner.source_id(path), name, _content_key(path))
        for name in classes
        for path in images[name]
    ]
    for name, count in too_small(items).items():
        scanner.report(
            scanner.root / name,
            "small_class",
            f"{count} image: too few to validate this class (it is trained on only)",
        )
    held = plan.validation(items)
    samples: dict[str, list[Sample]] = {"train": [], "validation": []}
    for name in classes:
        for path in images[name]:
            source_id = scanner.source_id(path)
            split = "validation" if source_id in held else "train"
            samples[split].append(Sample(split, name, path, None, source_id))
    return classes, {split: items for split, items in samples.items() if items}
