"""Find a dataset's layout, classes, splits and images, and report every oddity.

Four layouts are recognised (see :mod:`defectscope.data.layout` for the first two):

* Kaggle NEU-DET: ``ROOT/<split>/images/<class>/*`` and ``ROOT/<split>/annotations/*.xml``;
* YOLO (Ultralytics, Roboflow): a ``data.yaml`` with the class names, and ``ROOT/<split>/images``
  with ``ROOT/<split>/labels/*.txt`` (or ``ROOT/images/<split>`` with ``ROOT/labels/<split>``);
* COCO (Roboflow, CVAT): ``ROOT/<split>/_annotations.coco.json`` beside the images, or
  ``ROOT/annotations/instances_<split>.json`` with the images in ``ROOT/images`` or
  ``ROOT/<split>``;
* one folder per class: ``ROOT/<class>/*``.

Split folders named ``valid`` or ``val`` are the ``validation`` split. In the detection layouts
an image's class (for the classifier) is the class of its largest box, ``background`` without.
"""

from __future__ import annotations

from pathlib import Path

from defectscope.core.errors import FileError
from defectscope.data.annotations import image_class, read_coco, read_yolo, yolo_names
from defectscope.data.layout import (
    LAYOUT_CLASS_FOLDERS,
    LAYOUT_KAGGLE,
    DatasetIndex,
    DatasetLayoutError,
    Sample,
    SplitPlan,
    _has_class_folders,
    _kaggle_split_dirs,
    _scan_class_folders,
    _scan_kaggle,
    _Scanner,
    _visible_dirs,
    _walk_files,
)
from defectscope.data.splits import SplitItem
from defectscope.data.voc import VocError

LAYOUT_YOLO = "yolo"
LAYOUT_COCO = "coco"
BACKGROUND = "background"
SPLIT_NAMES = {"valid": "validation", "val": "validation"}


def _split_name(folder_name: str) -> str:
    return SPLIT_NAMES.get(folder_name, folder_name)


def _yolo_pairs(root: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (images folder, labels folder), in either YOLO folder arrangement."""
    pairs = {}
    for split_dir in _visible_dirs(root):
        if (split_dir / "images").is_dir() and (split_dir / "labels").is_dir():
            pairs[_split_name(split_dir.name)] = (split_dir / "images", split_dir / "labels")
    if not pairs and (root / "images").is_dir() and (root / "labels").is_dir():
        for split_dir in _visible_dirs(root / "images"):
            labels = root / "labels" / split_dir.name
            if labels.is_dir():
                pairs[_split_name(split_dir.name)] = (split_dir, labels)
    return pairs


def _finish_detection(scanner: _Scanner, names: list[str], samples: dict) -> list[str]:
    """The class list: the declared names, plus ``background`` when an image has no box."""
    used = {s.class_name for items in samples.values() for s in items}
    return [*names, BACKGROUND] if BACKGROUND in used and BACKGROUND not in names else names


def _scan_yolo(scanner: _Scanner, data_yaml: Path) -> tuple[list[str], dict]:
    names = yolo_names(data_yaml)
    samples: dict[str, list[Sample]] = {}
    for split, (images, labels) in sorted(_yolo_pairs(scanner.root).items()):
        found = []
        for path in _walk_files(images):
            if not scanner.usable_image(path):
                continue
            label_file = labels / path.relative_to(images).with_suffix(".txt")
            annotation = None
            if label_file.exists() or label_file.is_symlink():
                try:
                    annotation = read_yolo(label_file, names, scanner.root)
                except VocError as err:
                    scanner.report(label_file, "bad_annotation", f"{err.reason}; no boxes")
            name = image_class(annotation, BACKGROUND)
            source_id = scanner.source_id(path)
            found.append(Sample(split, name, path, label_file, source_id, annotation))
        samples[split] = found
    return _finish_detection(scanner, names, samples), samples


def _coco_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (annotation JSON, images folder), in either COCO folder arrangement."""
    files = {}
    for split_dir in _visible_dirs(root):
        for json_file in sorted(split_dir.glob("*.json")):
            files[_split_name(split_dir.name)] = (json_file, split_dir)
    annotations = root / "annotations"
    for json_file in sorted(annotations.glob("instances_*.json")) if annotations.is_dir() else []:
        split = json_file.stem.removeprefix("instances_")
        images = root / split if (root / split).is_dir() else root / "images"
        files[_split_name(split)] = (json_file, images)
    return files


def _scan_coco(scanner: _Scanner) -> tuple[list[str], dict]:
    names: list[str] = []
    samples: dict[str, list[Sample]] = {}
    for split, (json_file, images) in sorted(_coco_files(scanner.root).items()):
        try:
            declared, by_file = read_coco(json_file)
        except VocError as err:
            scanner.report(json_file, "bad_annotation", err.reason, "error")
            continue
        names = names or declared
        found = []
        for file_name, annotation in sorted(by_file.items()):
            path = images / file_name
            if not scanner.usable_image(path):
                continue
            name = image_class(annotation, BACKGROUND)
            found.append(Sample(split, name, path, json_file, scanner.source_id(path), annotation))
        samples[split] = found
    return _finish_detection(scanner, names, samples), samples


def _single_split(index: DatasetIndex, plan: SplitPlan) -> DatasetIndex:
    """A detection dataset with one split only (CVAT's ``default``): split it like class
    folders, stratified by image class."""
    if len(index.samples) != 1 or ("train" in index.samples and "validation" in index.samples):
        return index
    (only,) = index.samples.values()
    items = [SplitItem(s.source_id, s.class_name, s.source_id) for s in only]
    held = plan.validation(items)
    index.samples = {
        "train": [s for s in only if s.source_id not in held],
        "validation": [s for s in only if s.source_id in held],
    }
    return index


def _detection_layout(current: Path, plan: SplitPlan) -> DatasetIndex | None:
    data_yaml = next((p for p in sorted(current.glob("*.yaml")) if p.is_file()), None)
    if data_yaml is not None and _yolo_pairs(current):
        scanner = _Scanner(current)
        classes, samples = _scan_yolo(scanner, data_yaml)
        index = DatasetIndex(current, LAYOUT_YOLO, classes, samples, scanner.problems)
        return _single_split(index, plan)
    if _coco_files(current):
        scanner = _Scanner(current)
        classes, samples = _scan_coco(scanner)
        if classes:
            index = DatasetIndex(current, LAYOUT_COCO, classes, samples, scanner.problems)
            return _single_split(index, plan)
    return None


def discover_dataset(
    root: str | Path, val_fraction: float = 0.2, plan: SplitPlan | None = None
) -> DatasetIndex:
    """Find the layout, classes, samples and file-level problems under ``root``.

    A dataset without a split of its own is split by ``plan`` (default: a stratified
    ``val_fraction``).

    Raises:
        DatasetLayoutError: ``root`` is missing or holds no layout.
    """
    plan = plan or SplitPlan(val_fraction)
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
        try:
            if (index := _detection_layout(current, plan)) is not None:
                return index
        except FileError as err:
            raise DatasetLayoutError(err.path, err.reason) from None
    for current in candidates:
        if _has_class_folders(current):
            scanner = _Scanner(current)
            classes, samples = _scan_class_folders(scanner, plan)
            return DatasetIndex(current, LAYOUT_CLASS_FOLDERS, classes, samples, scanner.problems)
    raise DatasetLayoutError(
        given,
        "no dataset layout recognised. Expected ROOT/<split>/images/<class>/<image> (Kaggle "
        "NEU-DET, VOC XML in ROOT/<split>/annotations), a YOLO folder (data.yaml, images/, "
        "labels/), a COCO folder (*.json beside the images or in annotations/), or "
        "ROOT/<class>/<image> (one folder per class)",
    )
