"""Turn discovered samples into validated :class:`ImageRecord` objects (decode + VOC + boxes)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from defectscope.core.errors import ConfigError
from defectscope.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, read_canonical_image
from defectscope.data.layout import Problem, Sample
from defectscope.data.tfrecord_features import BoxRecord, ImageRecord
from defectscope.data.voc import VocAnnotation, VocError, clip_object, read_voc


def _boxes(
    annotation: VocAnnotation, sample: Sample, width: int, height: int, label_map: dict[str, int]
) -> tuple[tuple[BoxRecord, ...], list[Problem]]:
    path = str(sample.annotation_path)
    problems = [
        Problem(path, "bad_size" if note.startswith("<size>") else "bad_object", note)
        for note in annotation.warnings
    ]
    if annotation.filename and annotation.filename != sample.image_path.name:
        problems.append(
            Problem(
                path,
                "filename_mismatch",
                f"<filename> {annotation.filename!r} is not {sample.image_path.name!r}; "
                "paired by file stem",
                "info",
            )
        )
    if annotation.width and (annotation.width, annotation.height) != (width, height):
        problems.append(
            Problem(
                path,
                "size_mismatch",
                f"<size> {annotation.width}x{annotation.height} but the image is {width}x{height}",
            )
        )
    boxes = []
    for obj in annotation.objects:
        clipped, notes = clip_object(obj, width, height)
        kind = "box_inverted" if any(n.startswith("inverted") for n in notes) else "box_clipped"
        problems.extend(Problem(path, kind, note) for note in notes)
        if sample.annotation is None and obj.name != sample.class_name:  # VOC: image class given
            problems.append(
                Problem(
                    path,
                    "class_mismatch",
                    f"object {obj.name!r} in an image of class {sample.class_name!r}",
                )
            )
        if clipped is None:
            continue
        boxes.append(
            BoxRecord(
                xmin=clipped.xmin / width,
                ymin=clipped.ymin / height,
                xmax=clipped.xmax / width,
                ymax=clipped.ymax / height,
                class_text=obj.name,
                class_label=label_map.get(obj.name, -1),
                difficult=obj.difficult,
                truncated=obj.truncated,
            )
        )
    return tuple(boxes), problems


def _annotation(
    sample: Sample, width: int, height: int, root: Path | None
) -> tuple[VocAnnotation | None, Problem | None]:
    """The sample's boxes in pixels: read already (COCO, YOLO: normalised corners scaled to the
    image now), or read from its VOC file; a problem when that file cannot be used."""
    annotation = sample.annotation
    if annotation is None and sample.annotation_path is not None:
        try:
            annotation = read_voc(sample.annotation_path, root)
        except VocError as err:
            reason = f"{err.reason}; image used without boxes"
            return None, Problem(str(sample.annotation_path), "bad_annotation", reason)
    if annotation is not None and annotation.normalized:
        scaled = tuple(
            replace(
                o,
                xmin=o.xmin * width,
                xmax=o.xmax * width,
                ymin=o.ymin * height,
                ymax=o.ymax * height,
            )
            for o in annotation.objects
        )
        annotation = replace(annotation, objects=scaled, normalized=False)
    return annotation, None


def load_record(
    sample: Sample,
    label_map: dict[str, int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    root: Path | None = None,
) -> tuple[ImageRecord | None, list[Problem]]:
    """Decode one sample's image and annotation (files held inside ``root``). ``None`` when the
    image is unusable."""
    try:
        image = read_canonical_image(sample.image_path, max_pixels=max_pixels, root=root)
    except ImageDecodeError as err:
        return None, [Problem(str(sample.image_path), "unreadable_image", err.reason, "error")]
    boxes: tuple[BoxRecord, ...] = ()
    problems: list[Problem] = []
    annotation, trouble = _annotation(sample, image.width, image.height, root)
    if trouble is not None:
        problems.append(trouble)
    elif annotation is not None:
        boxes, problems = _boxes(annotation, sample, image.width, image.height, label_map)
    record = ImageRecord(
        encoded=image.encoded,
        format=image.format,
        height=image.height,
        width=image.width,
        filename=sample.image_path.name,
        source_id=sample.source_id,
        class_label=label_map[sample.class_name],
        class_text=sample.class_name,
        boxes=boxes,
    )
    return record, problems


def iter_records(
    samples: Sequence[Sample],
    label_map: dict[str, int],
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    root: Path | None = None,
) -> Iterator[tuple[Sample, ImageRecord | None, list[Problem]]]:
    """Load samples in order, ``workers`` at a time (Pillow decodes outside the GIL)."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers!r}")

    def load(sample: Sample) -> tuple[Sample, ImageRecord | None, list[Problem]]:
        return (sample, *load_record(sample, label_map, max_pixels, root))

    if workers == 1:
        yield from map(load, samples)
        return
    window: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for sample in samples:  # a bounded window keeps memory flat on large datasets
            window.append(pool.submit(load, sample))
            if len(window) >= 8 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
