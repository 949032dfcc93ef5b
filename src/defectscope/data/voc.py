"""Pascal VOC annotation parsing with defusedxml (no entity expansion, no external entities)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from defectscope.core.errors import FileError
from defectscope.core.files import DEFAULT_MAX_XML_BYTES, read_regular_file

MAX_XML_BYTES = DEFAULT_MAX_XML_BYTES  # a VOC file is a few hundred bytes; refuse anything absurd


class VocError(FileError):
    """An annotation file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: class name, pixel box (VOC corners) and flags."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class VocAnnotation:
    """The parts of a VOC file defectscope uses."""

    filename: str
    width: int
    height: int
    depth: int
    objects: tuple[VocObject, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)
    normalized: bool = False  # corners in [0, 1] of the image (YOLO), not pixels


def _text(node: Element, tag: str, default: str | None = None) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None:
        return default
    return child.text.strip()


def _number(node: Element, tag: str, where: str) -> float:
    value = _text(node, tag)
    if value is None:
        raise VocError(where, f"missing <{tag}>")
    try:
        number = float(value)
    except ValueError:
        raise VocError(where, f"<{tag}> is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise VocError(where, f"<{tag}> is not a finite number: {value!r}")
    return number


def _flag(node: Element, tag: str) -> bool:
    value = _text(node, tag, "0")
    return value not in ("0", "", "false", "False")


def _parse_object(node: Element, index: int, name_of_file: str) -> VocObject:
    where = f"{name_of_file}, object {index}"
    name = _text(node, "name")
    if not name:
        raise VocError(where, "missing <name>")
    box = node.find("bndbox")
    if box is None:
        raise VocError(where, f"{name}: missing <bndbox>")
    return VocObject(
        name=name,
        xmin=_number(box, "xmin", where),
        ymin=_number(box, "ymin", where),
        xmax=_number(box, "xmax", where),
        ymax=_number(box, "ymax", where),
        difficult=_flag(node, "difficult"),
        truncated=_flag(node, "truncated"),
    )


def _size(node: Element | None, name: str) -> tuple[tuple[int, int, int], list[str]]:
    """``<size>`` as whole numbers; a missing or bad one is (0, 0, 0) and a note (the image's
    own size is used)."""
    if node is None:
        return (0, 0, 0), []
    try:
        values = [_number(node, tag, name) for tag in ("width", "height")]
        values.append(_number(node, "depth", name) if node.find("depth") is not None else 0.0)
    except VocError as err:
        return (0, 0, 0), [f"<size> ignored: {err.reason}"]
    if any(v < 0 or v > 1e9 for v in values):
        return (0, 0, 0), [f"<size> ignored: {values} out of range"]
    return (int(values[0]), int(values[1]), int(values[2])), []


def parse_voc(data: bytes | str, name: str = "<xml>") -> VocAnnotation:
    """Parse VOC XML text. Objects that cannot be read are dropped with a warning.

    Raises:
        VocError: not XML, forbidden entities/DTD tricks, or not a VOC ``<annotation>``.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_XML_BYTES:
        raise VocError(name, f"{len(data)} bytes is too large for a VOC annotation")
    try:
        root = fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise VocError(name, f"refused unsafe XML ({type(err).__name__})") from None
    except ParseError as err:
        raise VocError(name, f"not well-formed XML ({err})") from None
    if root.tag != "annotation":
        raise VocError(name, f"root element is <{root.tag}>, expected <annotation>")
    (width, height, depth), notes = _size(root.find("size"), name)
    objects: list[VocObject] = []
    for index, node in enumerate(root.findall("object")):
        try:
            objects.append(_parse_object(node, index, name))
        except VocError as err:
            notes.append(f"object {index}: {err.reason}; object dropped")
    return VocAnnotation(
        filename=_text(root, "filename", "") or "",
        width=width,
        height=height,
        depth=depth,
        objects=tuple(objects),
        warnings=tuple(notes),
    )


def read_voc(path: str | Path, root: Path | None = None) -> VocAnnotation:
    """Read (a regular file, bounded, inside ``root``) and parse one VOC file; raises
    :class:`VocError` naming the file."""
    try:
        data = read_regular_file(path, MAX_XML_BYTES, root)
    except FileError as err:
        raise VocError(err.path, err.reason) from None
    return parse_voc(data, name=str(path))


def clip_object(obj: VocObject, width: int, height: int) -> tuple[VocObject | None, list[str]]:
    """Clip a box to the image; swap inverted corners. Returns the box (None if empty) and notes."""
    notes: list[str] = []
    xmin, xmax = obj.xmin, obj.xmax
    ymin, ymax = obj.ymin, obj.ymax
    if xmin > xmax or ymin > ymax:
        notes.append(f"inverted box {obj.name} ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) corrected")
        xmin, xmax = sorted((xmin, xmax))
        ymin, ymax = sorted((ymin, ymax))
    clipped = (
        min(max(xmin, 0.0), width),
        min(max(ymin, 0.0), height),
        min(max(xmax, 0.0), width),
        min(max(ymax, 0.0), height),
    )
    if clipped != (xmin, ymin, xmax, ymax):
        notes.append(
            f"box {obj.name} ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) out of the "
            f"{width}x{height} image, clipped"
        )
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        notes.append(f"box {obj.name} is empty after clipping; dropped")
        return None, notes
    return replace(obj, xmin=clipped[0], ymin=clipped[1], xmax=clipped[2], ymax=clipped[3]), notes
