"""Grad-CAM heatmaps: where in the image the predicted class came from.

The map is taken on the backbone's last activation (``block14_sepconv2_act``), weighted by the
mean gradient of the class score, rectified, normalised to [0, 1] and resized to the input.
It works on decoded arrays (the ones the classifier just predicted), never on files. Exported
models (TFLite, ONNX) have no gradients: their maps come from the Keras model of the same run
(``source_model`` in the export's metadata), loaded once.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from defectscope.inference.backends import Backend, KerasBackend
from defectscope.inference.model_files import ModelLoadError, locate_model, read_metadata
from defectscope.models.xception import (
    BACKBONE_NAME,
    DROPOUT_NAME,
    FEATURES_NAME,
    PREDICTIONS_NAME,
    SCALING_NAME,
)


class GradCam:
    """Heatmaps for batches of float images in [0, 255] at the model's input size, from the
    gradient of the class's logit (its probability for an older model without logits)."""

    def __init__(self, keras_model, logits: bool = True) -> None:
        import keras

        self.logits = logits  # the model's last layer gives logits (else probabilities)
        inputs = keras.Input(keras_model.input_shape[1:], name="image")
        x = keras_model.get_layer(SCALING_NAME)(inputs)
        feature_map = keras_model.get_layer(BACKBONE_NAME)(x, training=False)
        x = keras_model.get_layer(FEATURES_NAME)(feature_map)
        x = keras_model.get_layer(DROPOUT_NAME)(x, training=False)
        outputs = keras_model.get_layer(PREDICTIONS_NAME)(x)
        self.model = keras.Model(inputs, [feature_map, outputs], name="gradcam")

    def heatmaps(self, images, class_indices=None) -> tuple[np.ndarray, np.ndarray]:
        """Maps ``(N, H, W)`` in [0, 1] and probabilities ``(N, C)``; maps of the top class."""
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        with tf.GradientTape() as tape:
            feature_map, scores = self.model(images, training=False)
            if class_indices is None:
                class_indices = tf.argmax(scores, axis=1)
            chosen = tf.gather(scores, tf.cast(class_indices, tf.int32), batch_dims=1)
        probabilities = tf.nn.softmax(scores) if self.logits else scores
        gradients = tape.gradient(chosen, feature_map)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1))
        peak = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
        cams = tf.math.divide_no_nan(cams, peak)
        size = images.shape[1:3]
        maps = tf.image.resize(cams[..., None], size, method="bilinear")[..., 0]
        return maps.numpy(), probabilities.numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45):
    """The image with the heatmap (jet colours) blended over it, as a Pillow image."""
    from matplotlib import colormaps
    from PIL import Image

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    base = np.clip(image, 0, 255).astype(np.float32)
    blended = (1 - alpha) * base + alpha * colours
    return Image.fromarray(blended.astype(np.uint8))


def overlay_png(image: np.ndarray, heatmap: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    overlay(image, heatmap).save(buffer, format="PNG")
    return buffer.getvalue()


def peak_location(heatmap: np.ndarray) -> tuple[float, float]:
    """Normalised ``(x, y)`` of the hottest pixel (centre of the pixel)."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return (col + 0.5) / heatmap.shape[1], (row + 0.5) / heatmap.shape[0]


def source_model_path(metadata: dict, model_path: Path) -> Path | None:
    """The Keras model an export came from (``source_model``, relative to the export folder)."""
    source = metadata.get("source_model")
    if not source:
        return None
    path = Path(source)
    return path if path.is_absolute() else model_path.parent / path


def keras_model_for(backend: Backend):
    """The Keras model that explains ``backend``: its own, or its export's source model."""
    if isinstance(backend, KerasBackend):
        return backend.model
    source = source_model_path(backend.metadata, backend.path)
    if source is None or not source.is_file():
        raise ModelLoadError(
            backend.path, "heatmaps need the Keras model of the run (source_model) beside it"
        )
    location = locate_model(source)
    return KerasBackend(location.path, read_metadata(location)).model
