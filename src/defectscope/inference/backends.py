"""Inference backends behind one call: float32 images in [0, 255] -> class probabilities.

A model path is recognised by its files: a run folder or ``.keras`` file (Keras), a folder with
``saved_model.pb`` (TensorFlow SavedModel), a ``.tflite`` file (TFLite, XNNPACK) or a ``.onnx``
file (ONNX Runtime). Export folders hold one of those beside their ``metadata.json``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectscope.errors import FileError

METADATA_NAME = "metadata.json"
EXPORT_FILES = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}


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
    kinds = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}
    if path.suffix not in kinds or not path.is_file():
        raise ModelLoadError(
            path, "not a run folder, export folder or existing .keras/.tflite/.onnx file"
        )
    return ModelLocation(path, kinds[path.suffix], path.parent / METADATA_NAME)


def read_metadata(location: ModelLocation) -> dict:
    if not location.metadata_path.is_file():
        raise ModelLoadError(location.path, f"no {METADATA_NAME} beside it (classes, input size)")
    return json.loads(location.metadata_path.read_text())


def _threads() -> int:
    return os.cpu_count() or 1


class KerasBackend:
    name = "keras"

    def __init__(self, path: Path) -> None:
        import keras

        try:
            self.model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as err:  # Keras raises many types for a bad archive
            raise ModelLoadError(path, f"cannot load model ({err})") from None
        self.num_classes = int(self.model.output_shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(images, training=False))


class SavedModelBackend:
    name = "savedmodel"

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        try:
            self.model = tf.saved_model.load(str(path))
        except Exception as err:
            raise ModelLoadError(path, f"cannot load SavedModel ({err})") from None
        self.serve = self.model.signatures["serving_default"]
        self.num_classes = int(next(iter(self.serve.structured_outputs.values())).shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        outputs = self.serve(tf.constant(images, tf.float32))
        return np.asarray(next(iter(outputs.values())))


class TFLiteBackend:
    name = "tflite"

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notice of tf.lite.Interpreter
            try:
                self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=_threads())
            except (ValueError, RuntimeError) as err:
                raise ModelLoadError(path, f"cannot load TFLite model ({err})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.num_classes = int(self.output["shape"][-1])
        self._batch = -1

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(images.shape))
            self.interpreter.allocate_tensors()
            self._batch = images.shape[0]
        self.interpreter.set_tensor(self.input["index"], images)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]))


class OnnxBackend:
    name = "onnx"

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise ModelLoadError(path, f"cannot load ONNX model ({err})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.num_classes = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        return self.session.run(None, feed)[0]


BACKENDS = {
    "keras": KerasBackend,
    "savedmodel": SavedModelBackend,
    "tflite": TFLiteBackend,
    "onnx": OnnxBackend,
}


def open_backend(location: ModelLocation):
    """Load the model at ``location`` with its backend."""
    return BACKENDS[location.kind](location.path)
