"""Load a trained defect detector (run folder, ``.keras`` file or export) and find boxes.

Images are decoded by the data layer's one path and stretched to the detector's square input,
exactly as in training; boxes come back in pixels of the original image. A Keras detector
decodes its own outputs (KerasHub's anchors and non-max suppression); an ONNX or TFLite export
computes the raw outputs, which the same KerasHub decoder then turns into boxes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from defectscope.core.errors import ConfigError
from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_pixels_sized,
    read_pixels,
    read_pixels_sized,
)
from defectscope.data.pipeline import resize_for_model
from defectscope.inference.backends import BACKENDS
from defectscope.inference.flips import FlipAverage
from defectscope.inference.model_files import (
    ModelLoadError,
    ModelLocation,
    locate_model,
    read_metadata,
)
from defectscope.inference.sources import SourceItem
from defectscope.models.anchors import anchor_boxes
from defectscope.models.detector import (
    DEFAULT_BOX_CONFIDENCE,
    compiled_decoder,
    create_detector,
    per_image,
    set_nms_iou,
)

TASK_DETECT = "detect"


@dataclass
class Box:
    label: str
    confidence: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass
class Detection:
    """One image's boxes (pixels of the original image); ``error`` when it could not be read."""

    path: str
    boxes: list[Box] = field(default_factory=list)
    width: int = 0
    height: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def counts(self) -> dict[str, int]:
        """Defects per class: how many boxes of each."""
        found: dict[str, int] = {}
        for box in self.boxes:
            found[box.label] = found.get(box.label, 0) + 1
        return found

    def to_dict(self) -> dict:
        return {**asdict(self), "counts": self.counts()}


@dataclass
class RawBoxes:
    """Detections at the model's input: ``xyxy`` pixels, class indices, scores."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


TRUE_COLOR, FOUND_COLOR = (40, 200, 40), (230, 40, 40)


def draw_labelled_boxes(picture, boxes, texts, color) -> None:
    """Rectangles (pixel ``xyxy``) with a caption each, drawn onto a Pillow image in place."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 300))
    for box, text in zip(boxes, texts, strict=True):
        corners = [float(v) for v in box]
        draw.rectangle(corners, outline=color, width=width)
        if text:
            draw.text((corners[0] + width + 1, corners[1] + width), text, fill=color)


def boxes_png(detection: Detection) -> bytes:
    """The original image with the detection's boxes and labels, as PNG bytes."""
    from PIL import Image

    picture = Image.fromarray(read_pixels(detection.path))
    boxes = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in detection.boxes]
    texts = [f"{b.label} {b.confidence:.2f}" for b in detection.boxes]
    draw_labelled_boxes(picture, boxes, texts, FOUND_COLOR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def is_detector(metadata: dict) -> bool:
    return metadata.get("task") == TASK_DETECT


RAW_OUTPUTS = ("bbox_regression", "cls_logits")


def raw_outputs(outputs: dict[str, np.ndarray], num_classes: int, path: Path) -> dict:
    """A backend's outputs under KerasHub's names: by name, else by width (4 box numbers
    against one logit per class), else in name order (the export keeps the Keras order)."""
    if set(RAW_OUTPUTS) <= outputs.keys():
        return {name: outputs[name] for name in RAW_OUTPUTS}
    if len(outputs) != 2:
        raise ModelLoadError(path, f"a detector has 2 outputs, this model {len(outputs)}")
    widths = {int(np.shape(value)[-1]): value for value in outputs.values()}
    if num_classes != 4 and set(widths) == {4, num_classes}:
        return {"bbox_regression": widths[4], "cls_logits": widths[num_classes]}
    first, second = (outputs[name] for name in sorted(outputs))
    return {"bbox_regression": first, "cls_logits": second}


class Detector:
    """A loaded detector (Keras, or an ONNX/TFLite export decoded by KerasHub); with ``tta``
    its outputs are averaged over the image and its mirror images (:mod:`.flips`)."""

    def __init__(
        self,
        location: ModelLocation,
        metadata: dict,
        nms_iou: float | None = None,
        tta: bool = False,
    ) -> None:
        self.path, self.metadata, self.kind = location.path, metadata, location.kind
        self.classes: list[str] = list(metadata["classes"])
        self.image_size = int(metadata["image_size"])
        settings = metadata.get("detector", {})
        self.backend = BACKENDS[location.kind](location.path, metadata)
        if location.kind == "keras":
            self.model = self.backend.model
        else:  # an export gives raw outputs; an unweighted twin decodes them the same way
            self.model = create_detector(self.classes, self.image_size, None, **settings)
        self.confidence = float(settings.get("confidence", 0.05))
        # boxes shown unless a caller asks for another confidence: chosen on the selection set
        self.box_confidence = _box_confidence(location, metadata, tta)
        if nms_iou is not None:
            set_nms_iou(self.model, nms_iou)
            self.metadata = {**metadata, "detector": {**settings, "nms_iou": self.nms_iou}}
        self._decode = compiled_decoder(self.model)
        self.flips = None
        if tta:
            anchors = anchor_boxes(self.model.anchor_generator, self.image_size)
            self.flips = FlipAverage(anchors, self.image_size)
            self.metadata = {**self.metadata, "test_time_flips": True}

    @property
    def tta(self) -> bool:
        """Whether outputs are averaged over the image and its mirror images."""
        return self.flips is not None

    @property
    def nms_iou(self) -> float:
        """The overlap above which a box drops a weaker one of its class."""
        return float(self.model.prediction_decoder.iou_threshold)

    @property
    def backend_name(self) -> str:
        return self.kind

    def detect_arrays(self, images: np.ndarray) -> list[RawBoxes]:
        """Boxes of float images ``(N, S, S, 3)`` in [0, 255], at the model's input size."""
        images = np.asarray(images, dtype=np.float32)
        if self.flips is None:
            outputs = self._raw_outputs(images)
        else:
            views = self.flips.views(images)
            outputs = self.flips.average({k: self._raw_outputs(v) for k, v in views.items()})
        decoded = self._decode(outputs, images)
        return [RawBoxes(*found) for found in per_image(decoded)]

    def _raw_outputs(self, images: np.ndarray) -> dict:
        outputs = self.backend.predict_outputs(images)  # (KerasHub's predict_on_batch cannot
        return raw_outputs(outputs, len(self.classes), self.path)  # unpack a lone batch)

    def detect(
        self,
        paths: Iterable[SourceItem | str],
        batch_size: int = 8,
        confidence: float | None = None,
    ) -> Iterator[Detection]:
        """Detections of files, in input order; an unreadable file gives an ``error``. Boxes
        at least ``confidence`` confident (default: :attr:`box_confidence`)."""
        confidence = self.box_confidence if confidence is None else confidence
        batch: list[tuple[str, np.ndarray | None, str]] = []
        for item in paths:
            batch.append(self._read(item))
            if len(batch) == batch_size:
                yield from self._detect_batch(batch, confidence)
                batch = []
        if batch:
            yield from self._detect_batch(batch, confidence)

    def _read(self, item: SourceItem | str) -> tuple[str, tuple | None, str]:
        """``(name, (pixels, original size) or None, error)``."""
        if isinstance(item, tuple):
            return item[0], None, item[1]
        name = str(item)
        try:
            return name, read_pixels_sized(name, self.image_size), ""
        except ImageDecodeError as err:
            return name, None, err.reason

    def _detect_batch(self, batch, confidence: float) -> Iterator[Detection]:
        readable = [read[0] for _, read, _ in batch if read is not None]
        images = [resize_for_model(p, self.image_size).numpy() for p in readable]
        found = iter(self.detect_arrays(np.stack(images)) if images else [])
        for name, read, error in batch:
            if read is None:
                yield Detection(name, error=error)
                continue
            yield self.to_original(name, next(found), read[1], confidence)

    def prepare_bytes(
        self, data: bytes, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """Encoded bytes -> the ``(S, S, 3)`` float image and the original ``(width, height)``."""
        pixels, original = decode_pixels_sized(data, name, self.image_size, max_pixels)
        return resize_for_model(pixels, self.image_size).numpy(), original

    def detect_image(
        self,
        name: str,
        image: np.ndarray,
        original: tuple[int, int],
        confidence: float | None = None,
    ) -> Detection:
        """One prepared image's detection, in pixels of the original image."""
        confidence = self.box_confidence if confidence is None else confidence
        return self.to_original(name, self.detect_arrays(image[None])[0], original, confidence)

    def to_original(
        self, name: str, raw: RawBoxes, original: tuple[int, int], confidence: float
    ) -> Detection:
        """Boxes above ``confidence``, scaled from the model's input to the original image and
        clipped to it."""
        width, height = original
        scale = np.array([width, height, width, height], np.float64) / self.image_size
        limit = np.array([width, height, width, height], np.float64)
        boxes = []
        for box, label, score in zip(raw.boxes, raw.labels, raw.scores, strict=True):
            if score < confidence or not 0 <= label < len(self.classes):
                continue
            corners = np.clip(np.asarray(box, np.float64) * scale, 0.0, limit)
            if corners[2] > corners[0] and corners[3] > corners[1]:
                boxes.append(Box(self.classes[int(label)], float(score), *map(float, corners)))
        return Detection(name, boxes, original[0], original[1])


def selection_choices(metadata: dict, tta: bool = False) -> dict:
    """The part of a detector's metadata holding what its selection set chose: with ``tta``
    the figures measured with test-time flips (``metadata["tta"]``) when it has them."""
    measured = metadata.get("tta")
    return measured if tta and isinstance(measured, dict) else metadata


def _box_confidence(location: ModelLocation, metadata: dict, tta: bool = False) -> float:
    """The confidence chosen on the selection set (with test-time flips when ``tta`` and the
    detector was measured with them), else the default."""
    chosen = selection_choices(metadata, tta)
    value = chosen.get("box_confidence", metadata.get("box_confidence", DEFAULT_BOX_CONFIDENCE))
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ModelLoadError(
            location.metadata_path, f"box_confidence must be a number in [0, 1], got {value!r}"
        )
    return float(value)


def check_tta_fits(model, tta: bool) -> None:
    """Refuse ``tta`` for a detector loaded without it (it is set when a detector is loaded)."""
    if tta and isinstance(model, Detector) and not model.tta:
        raise ConfigError("a loaded detector keeps its tta: load_detector(path, tta=True)")


def load_detector(path: str | Path, nms_iou: float | None = None, tta: bool = False) -> Detector:
    """Load a detector run folder, ``.keras`` file or export; ``nms_iou`` replaces the NMS
    IoU threshold it was saved with (chosen on its selection set); ``tta`` averages its
    outputs over the image and its horizontal and vertical mirror images (3x the time)."""
    location = locate_model(path)
    metadata = read_metadata(location)
    if not is_detector(metadata):
        raise ModelLoadError(location.path, "a classifier, not a detector (task is not 'detect')")
    import_tensorflow_quietly()
    return Detector(location, metadata, nms_iou, tta)
