"""Box annotations users actually have, besides Pascal VOC: YOLO txt folders and COCO JSON.

What CVAT, Label Studio and Roboflow export, read into the same :class:`VocAnnotation` objects
as VOC files, so the same checks apply afterwards (boxes clipped to the image, non-finite values
refused, unknown classes reported). YOLO boxes are normalised (``normalized=True``) and become
pixels once the image's size is known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from defectscope.core.errors import FileError
from defectscope.core.files import read_regular_file
from defectscope.data.voc import VocAnnotation, VocError, VocObject

MAX_LABEL_BYTES = 1024 * 1024
MAX_COCO_BYTES = 512 * 1024 * 1024


def _finite(values: list[str], where: str) -> list[float]:
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise VocError(where, f"not numbers: {' '.join(values)!r}") from None
    if not all(math.isfinite(n) for n in numbers):
        raise VocError(where, f"not finite numbers: {' '.join(values)!r}")
    return numbers


def read_yolo(path: Path, names: list[str], root: Path | None = None) -> VocAnnotation:
    """A YOLO label file: ``class cx cy w h`` per line, normalised to the image. Bad lines are
    dropped with a note; an unreadable file raises :class:`VocError`."""
    try:
        text = read_regular_file(path, MAX_LABEL_BYTES, root).decode("utf-8")
    except FileError as err:
        raise VocError(err.path, err.reason) from None
    except UnicodeDecodeError:
        raise VocError(path, "not a UTF-8 text label file") from None
    objects, notes = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 5:
                raise VocError(path, f"expected 5 values, found {len(parts)}")
            index, cx, cy, w, h = _finite(parts, str(path))
            if index != int(index) or not 0 <= index < len(names):
                raise VocError(path, f"class {parts[0]} is not one of the {len(names)} names")
        except VocError as err:
            notes.append(f"line {number}: {err.reason}; object dropped")
            continue
        name = names[int(index)]
        objects.append(VocObject(name, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return VocAnnotation("", 0, 0, 0, tuple(objects), tuple(notes), normalized=True)


def yolo_names(data_yaml: Path) -> list[str]:
    """Class names of an Ultralytics/Roboflow ``data.yaml`` (a list, or a dict by index)."""
    import yaml

    try:
        loaded = yaml.safe_load(read_regular_file(data_yaml, MAX_LABEL_BYTES)) or {}
        names = loaded["names"]
    except (FileError, yaml.YAMLError, KeyError, TypeError) as err:
        raise VocError(data_yaml, f"no class names in it ({err})") from None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise VocError(data_yaml, "names must be a list of class names")
    return names


def _coco_object(box: dict, names: dict, where: str) -> VocObject:
    category = box.get("category_id")
    if category not in names:
        raise VocError(where, f"category_id {category!r} is not a category")
    x, y, w, h = _finite([str(v) for v in box.get("bbox", [])][:4] or ["nan"] * 4, where)
    return VocObject(names[category], x, y, x + w, y + h, truncated=bool(box.get("iscrowd")))


def read_coco(path: Path) -> tuple[list[str], dict[str, VocAnnotation]]:
    """Class names (in category order) and an annotation per image file name of a COCO JSON.

    Raises :class:`VocError` naming the file when it is not COCO.
    """
    try:
        data = json.loads(read_regular_file(path, MAX_COCO_BYTES))
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
        images = {i["id"]: i for i in data["images"]}
        boxes = data.get("annotations", [])
    except (FileError, ValueError, KeyError, TypeError) as err:
        raise VocError(path, f"not a COCO annotation file ({err})") from None
    by_image: dict[int, tuple[list[VocObject], list[str]]] = {i: ([], []) for i in images}
    for number, box in enumerate(boxes):
        image_id = box.get("image_id") if isinstance(box, dict) else None
        if image_id not in by_image:
            continue
        try:
            by_image[image_id][0].append(_coco_object(box, categories, str(path)))
        except VocError as err:
            by_image[image_id][1].append(f"annotation {number}: {err.reason}; object dropped")
    annotations = {}
    for image_id, info in images.items():
        objects, notes = by_image[image_id]
        name = str(info.get("file_name", ""))
        width, height = int(info.get("width") or 0), int(info.get("height") or 0)
        annotations[name] = VocAnnotation(name, width, height, 3, tuple(objects), tuple(notes))
    return [categories[k] for k in sorted(categories)], annotations


def image_class(annotation: VocAnnotation | None, background: str) -> str:
    """The image-level class of a detection image: its largest box's, else ``background``."""
    if annotation is None or not annotation.objects:
        return background
    largest = max(annotation.objects, key=lambda o: (o.xmax - o.xmin) * (o.ymax - o.ymin))
    return largest.name
