"""Load a trained model (run folder, ``.keras`` file or any export) and predict images.

Images are decoded by the data layer's one path (:func:`canonical_image` then
:func:`preprocess_encoded`), so a prediction sees exactly the pixels training and evaluation saw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from defectscope import __version__
from defectscope.atomic_io import atomic_write_json
from defectscope.data.images import ImageDecodeError, read_canonical_image
from defectscope.deploy.backends import (
    METADATA_NAME,
    ModelLoadError,
    ModelLocation,
    locate_model,
    open_backend,
    read_metadata,
)
from defectscope.inference.sources import SourceItem, expand_sources, stream_sources

__all__ = [
    "Classifier",
    "ModelLoadError",
    "Prediction",
    "expand_sources",
    "load_model",
    "stream_sources",
]
log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One image's result; ``error`` is empty when the image was predicted."""

    path: str
    label: str = ""
    confidence: float = 0.0
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict:
        values = asdict(self)
        values["top_k"] = [{"label": name, "probability": p} for name, p in self.top_k]
        return values


def write_model_metadata(folder: Path, classes: list[str], image_size: int, **extra) -> None:
    """``metadata.json`` beside a model: what any loader needs to use it."""
    atomic_write_json(
        folder / METADATA_NAME,
        {
            "classes": list(classes),
            "image_size": image_size,
            "channels": 3,
            "input": "float32 RGB in [0, 255], shape (N, size, size, 3); scaling is in the model",
            "preprocessing": "canonical decode -> RGB uint8 -> bilinear resize (antialias)",
            "defectscope_version": __version__,
            **extra,
        },
    )


class Classifier:
    """A loaded model (any backend) with its classes and input size."""

    def __init__(self, backend, metadata: dict, location: ModelLocation) -> None:
        self.backend, self.metadata, self.location = backend, metadata, location
        self.classes: list[str] = list(metadata["classes"])
        self.image_size = int(metadata["image_size"])
        self.path = location.path
        if len(self.classes) != backend.num_classes:
            raise ModelLoadError(
                location.path,
                f"metadata lists {len(self.classes)} classes, the model has "
                f"{backend.num_classes} outputs",
            )

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def predict_images(self, images) -> np.ndarray:
        """Probabilities for a batch of float images in [0, 255] at the model's size."""
        return self.backend(np.asarray(images, dtype=np.float32))

    def predict(
        self, paths: Iterable[str | Path], batch_size: int = 32, top_k: int = 3
    ) -> list[Prediction]:
        """Predict files; an unreadable file gives a :class:`Prediction` with ``error`` set."""
        return list(self.iter_predict(paths, batch_size, top_k))

    def iter_predict(
        self, paths: Iterable[SourceItem | str], batch_size: int = 32, top_k: int = 3
    ) -> Iterator[Prediction]:
        """Stream predictions in input order through tf.data, holding a few batches at a time.

        ``paths`` may be lazy (see :func:`stream_sources`); an item ``(source, error)`` passes
        through as an error row.
        """
        import tensorflow as tf

        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        for names, images, errors in stream_images(paths, self.image_size, batch_size):
            readable = np.flatnonzero(errors == b"")
            rows = iter(self.predict_images(tf.gather(images, readable)) if len(readable) else [])
            for name, error in zip(names, errors, strict=True):
                name = name.decode("utf-8", "surrogateescape")
                if error:
                    reason = error.decode("utf-8", "replace")
                    log.warning("cannot predict %s: %s", name, reason)
                    yield Prediction(path=name, error=reason)
                    continue
                row = next(rows)
                order = np.argsort(row)[::-1][:top_k]
                yield Prediction(
                    path=name,
                    label=self.classes[int(order[0])],
                    confidence=float(row[int(order[0])]),
                    top_k=[(self.classes[int(i)], float(row[int(i)])) for i in order],
                )


def _read_for_prediction(path, error):
    """Canonical bytes of one file, or ``b""`` and the reason it cannot be read."""
    if error.numpy():
        return b"", error.numpy()
    name = path.numpy().decode("utf-8", "surrogateescape")
    try:
        return read_canonical_image(name).encoded, b""
    except ImageDecodeError as err:
        return b"", err.reason.encode("utf-8")


def stream_images(paths: Iterable[SourceItem | str], image_size: int, batch_size: int):
    """Batches ``(names, images, errors)`` as numpy/tensors; ``errors[i] == b""`` when readable.

    A lazy ``paths`` is consumed as the batches are drawn, with bounded read-ahead.
    """
    import tensorflow as tf

    from defectscope.data.pipeline import preprocess_encoded

    failures: list[BaseException] = []

    def items():
        try:
            for item in paths:
                if isinstance(item, tuple):
                    yield item[0].encode("utf-8", "surrogateescape"), item[1].encode("utf-8")
                else:
                    yield str(item).encode("utf-8", "surrogateescape"), b""
        except Exception as err:  # raised again below, not wrapped by tf.data
            failures.append(err)

    spec = tf.TensorSpec([], tf.string)
    dataset = tf.data.Dataset.from_generator(items, output_signature=(spec, spec))

    def read(path, error):
        encoded, reason = tf.py_function(_read_for_prediction, [path, error], [tf.string] * 2)
        encoded.set_shape([])
        reason.set_shape([])
        return path, encoded, reason

    def decode(path, encoded, reason):
        blank = tf.zeros([image_size, image_size, 3], tf.float32)
        image = tf.cond(
            tf.equal(reason, b""), lambda: preprocess_encoded(encoded, image_size), lambda: blank
        )
        return path, image, reason

    autotune = tf.data.AUTOTUNE
    dataset = dataset.map(read, num_parallel_calls=autotune, deterministic=True)
    dataset = dataset.map(decode, num_parallel_calls=autotune, deterministic=True)
    for names, images, errors in dataset.batch(batch_size).prefetch(2):
        yield names.numpy(), images, errors.numpy()
    if failures:
        raise failures[0]


def load_model(path: str | Path) -> Classifier:
    """Load a run folder, ``.keras`` file or export (SavedModel, TFLite, ONNX) with its metadata.

    Keras files load in safe mode: a model that would run arbitrary code is refused.
    """
    location = locate_model(path)
    metadata = read_metadata(location)
    return Classifier(open_backend(location), metadata, location)
