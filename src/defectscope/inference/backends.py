"""Inference backends behind one small protocol: float32 images in [0, 255] -> model outputs.

Keras (run folders, ``.keras``), TensorFlow SavedModel, TFLite (XNNPACK) and ONNX Runtime each
load a model found by :func:`~defectscope.inference.model_files.locate_model` and predict numpy
batches. Everything above (classifier, service, exports, benchmark) talks to :class:`Backend`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from defectscope.inference.model_files import (
    ModelLoadError,
    ModelLocation,
    locate_model,
    read_metadata,
)


@runtime_checkable
class Backend(Protocol):
    """A loaded model: its metadata and a batch prediction on float32 ``(N, S, S, 3)`` images."""

    name: ClassVar[str]
    path: Path
    metadata: dict
    output_size: int  # values per image of the (first) output, e.g. the number of classes

    def predict(self, images: np.ndarray) -> np.ndarray: ...


def _threads() -> int:
    return os.cpu_count() or 1


class KerasBackend:
    """A ``.keras`` file, loaded in safe mode (a model that would run code is refused)."""

    name: ClassVar[str] = "keras"

    def __init__(self, path: Path, metadata: dict) -> None:
        import keras

        self.path, self.metadata = path, metadata
        if metadata.get("task") == "detect":
            from defectscope.models.detector import register_detector_layers

            register_detector_layers()
        try:
            self.model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as err:  # Keras raises many types for a bad archive
            raise ModelLoadError(path, f"cannot load model ({err})") from None
        self.output_size = len(metadata.get("classes", ())) or int(self.model.output_shape[-1])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(images, training=False))

    def predict_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (a detector has two: box regression and class logits)."""
        outputs = self.model(images, training=False)
        if isinstance(outputs, dict):
            return {name: np.asarray(value) for name, value in outputs.items()}
        return {"output_0": np.asarray(outputs)}


class SavedModelBackend:
    name: ClassVar[str] = "savedmodel"

    def __init__(self, path: Path, metadata: dict) -> None:
        import tensorflow as tf

        self.path, self.metadata = path, metadata
        try:
            self.model = tf.saved_model.load(str(path))
        except Exception as err:
            raise ModelLoadError(path, f"cannot load SavedModel ({err})") from None
        self.serve = self.model.signatures["serving_default"]
        self.output_size = int(next(iter(self.serve.structured_outputs.values())).shape[-1])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return next(iter(self.predict_outputs(images).values()))

    def predict_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (a detector has two: box regression and class logits)."""
        import tensorflow as tf

        outputs = self.serve(tf.constant(images, tf.float32))
        return {name: np.asarray(value) for name, value in outputs.items()}


class TFLiteBackend:
    name: ClassVar[str] = "tflite"

    def __init__(self, path: Path, metadata: dict) -> None:
        import tensorflow as tf

        self.path, self.metadata = path, metadata
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notice of tf.lite.Interpreter
            try:
                self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=_threads())
            except (ValueError, RuntimeError) as err:
                raise ModelLoadError(path, f"cannot load TFLite model ({err})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.output_size = int(self.output["shape"][-1])
        self._batch = -1

    def predict(self, images: np.ndarray) -> np.ndarray:
        return next(iter(self.predict_outputs(images).values()))

    def predict_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (a detector has two: box regression and class logits)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(images.shape))
            self.interpreter.allocate_tensors()
            self._batch = images.shape[0]
        self.interpreter.set_tensor(self.input["index"], images)
        self.interpreter.invoke()
        return {
            detail["name"]: np.array(self.interpreter.get_tensor(detail["index"]))
            for detail in self.interpreter.get_output_details()
        }


class OnnxBackend:
    name: ClassVar[str] = "onnx"

    def __init__(self, path: Path, metadata: dict) -> None:
        import onnxruntime as ort

        self.path, self.metadata = path, metadata
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise ModelLoadError(path, f"cannot load ONNX model ({err})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_size = int(self.session.get_outputs()[0].shape[-1])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return next(iter(self.predict_outputs(images).values()))

    def predict_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (a detector has two: box regression and class logits)."""
        feed = {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        names = [output.name for output in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feed), strict=True))


BACKENDS: dict[str, type] = {
    "keras": KerasBackend,
    "savedmodel": SavedModelBackend,
    "tflite": TFLiteBackend,
    "onnx": OnnxBackend,
}


def open_backend(location: ModelLocation, metadata: dict | None = None) -> Backend:
    """Load the model at ``location`` with the backend of its kind."""
    metadata = read_metadata(location) if metadata is None else metadata
    return BACKENDS[location.kind](location.path, metadata)


def load_backend(path: str | Path) -> Backend:
    """Find and load the model at ``path`` (run folder, ``.keras`` file or export)."""
    return open_backend(locate_model(path))
