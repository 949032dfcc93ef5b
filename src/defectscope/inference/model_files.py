"""Where a model lives: run folders, ``.keras`` files and exports, each with ``metadata.json``.

A model path is recognised by its files: a run folder or ``.keras`` file (Keras), a folder with
``saved_model.pb`` (TensorFlow SavedModel), a ``.tflite`` file (TFLite) or a ``.onnx`` file
(ONNX Runtime). Export folders hold one of those beside their ``metadata.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from defectscope.core.atomic_io import atomic_write_json
from defectscope.core.errors import FileError
from defectscope.core.version import __version__

METADATA_NAME = "metadata.json"
EXPORT_FILES = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
MODEL_SUFFIXES = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}


class ModelLoadError(FileError):
    """A model path that holds no usable defectscope model."""


@dataclass(frozen=True)
class ModelLocation:
    """What a model path resolved to: the loadable file or folder, its kind, its metadata."""

    path: Path
    kind: str  # keras | savedmodel | tflite | onnx
    metadata_path: Path


def locate_model(path: str | Path) -> ModelLocation:
    """Recognise a run folder, ``.keras`` file, export folder, or a model file beside metadata."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "weights" / "best.keras", path / "best.keras"):
            if candidate.is_file():
                return ModelLocation(candidate, "keras", candidate.parent / METADATA_NAME)
        if (path / "saved_model.pb").is_file():
            return ModelLocation(path, "savedmodel", path.parent / METADATA_NAME)
        for name in EXPORT_FILES.values():
            if (path / name).exists():
                return locate_model(path / name)
        raise ModelLoadError(path, "no run (weights/best.keras) or export (metadata.json) here")
    if path.suffix not in MODEL_SUFFIXES or not path.is_file():
        raise ModelLoadError(
            path, "not a run folder, export folder or existing .keras/.tflite/.onnx file"
        )
    return ModelLocation(path, MODEL_SUFFIXES[path.suffix], path.parent / METADATA_NAME)


def read_metadata(location: ModelLocation) -> dict:
    """The ``metadata.json`` beside a model; a missing or malformed one is a ModelLoadError."""
    if not location.metadata_path.is_file():
        raise ModelLoadError(location.path, f"no {METADATA_NAME} beside it (classes, input size)")
    try:
        metadata = json.loads(location.metadata_path.read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(location.metadata_path, f"unreadable metadata ({err})") from None
    if not isinstance(metadata, dict) or not {"classes", "image_size"} <= set(metadata):
        raise ModelLoadError(location.metadata_path, "metadata lacks 'classes' or 'image_size'")
    return metadata


def write_model_metadata(
    folder: Path, classes: list[str], image_size: int, resize: str = "stretch", **extra
) -> None:
    """``metadata.json`` beside a model: what any loader needs to use it."""
    how = "stretched to" if resize == "stretch" else "letterboxed (aspect kept, black padding) in"
    atomic_write_json(
        folder / METADATA_NAME,
        {
            "classes": list(classes),
            "image_size": image_size,
            "resize": resize,
            "output": "logits",
            "channels": 3,
            "input": "float32 RGB in [0, 255], shape (N, size, size, 3); scaling is in the model",
            "preprocessing": f"canonical decode -> RGB uint8 -> {how} the square (antialias)",
            "defectscope_version": __version__,
            **extra,
        },
    )


def model_task(path: str | Path) -> str:
    """``classify`` or ``detect``: what the model at ``path`` does (read from its metadata)."""
    return str(read_metadata(locate_model(path)).get("task", "classify"))
