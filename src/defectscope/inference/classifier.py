"""Load a trained model (run folder, ``.keras`` file or any export) and predict images.

One path from bytes to answer: images are decoded by the data layer
(:func:`~defectscope.data.pipeline.prepare_image_bytes`, or the same steps inside tf.data for
files), predicted by :meth:`Classifier.predict_arrays` and turned into :class:`Prediction`
objects by :meth:`Classifier.predictions`. The command line, the Python API, the service and
Grad-CAM all go through it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from defectscope.core.errors import ConfigError
from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, read_pixels
from defectscope.data.pipeline import prepare_image_bytes, resize_for_model
from defectscope.data.tfdata import without_autotune_thread
from defectscope.inference.backends import Backend, open_backend
from defectscope.inference.explain import GradCam, keras_model_for
from defectscope.inference.model_files import ModelLoadError, locate_model, read_metadata
from defectscope.inference.scores import softmax, unknown_scores
from defectscope.inference.sources import SourceItem

log = logging.getLogger(__name__)


UNKNOWN = "unknown"


@dataclass
class Prediction:
    """One image's result; ``error`` is empty when the image was predicted.

    ``label`` is the most probable class, or ``unknown`` when the image is unlike the training
    images (``unknown_score`` above the model's threshold; ``top_k`` still lists the classes).
    With an operating point (a model with an OK class) ``defect`` says defect or OK at the
    chosen escape rate (an unknown image counts as a defect: it is not passed unseen).
    """

    path: str
    label: str = ""
    confidence: float = 0.0
    top_k: list[tuple[str, float]] = field(default_factory=list)
    defect: bool | None = None
    defect_score: float | None = None
    unknown: bool = False
    unknown_score: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict:
        values = asdict(self)
        values["top_k"] = [{"label": name, "probability": p} for name, p in self.top_k]
        return values


@dataclass
class PredictionBatch:
    """Predictions of one batch, in input order, with the decoded images that were predicted."""

    predictions: list[Prediction]
    images: np.ndarray  # (n_ok, S, S, 3) float32, the images of the predictions that are ok

    @property
    def ok_paths(self) -> list[str]:
        return [p.path for p in self.predictions if p.ok]


class Classifier:
    """A loaded model (any backend) with its classes and input size."""

    def __init__(self, backend: Backend) -> None:
        self.backend, self.metadata = backend, backend.metadata
        self.classes: list[str] = list(self.metadata["classes"])
        self.image_size = int(self.metadata["image_size"])
        self.resize = str(self.metadata.get("resize", "stretch"))
        self.gives_logits = self.metadata.get("output") == "logits"  # else probabilities
        self.path = backend.path
        self._gradcam: GradCam | None = None
        if len(self.classes) != backend.output_size:
            raise ModelLoadError(
                backend.path,
                f"metadata lists {len(self.classes)} classes, the model has "
                f"{backend.output_size} outputs",
            )

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def predict_outputs(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(N, C)`` and logits (None for a model that outputs probabilities)
        of float images ``(N, S, S, 3)`` in [0, 255]."""
        outputs = self.backend.predict(np.asarray(images, dtype=np.float32))
        return (softmax(outputs), outputs) if self.gives_logits else (outputs, None)

    def predict_arrays(self, images) -> np.ndarray:
        """Probabilities ``(N, C)`` for float images ``(N, S, S, 3)`` in [0, 255]."""
        return self.predict_outputs(images)[0]

    def unknown_scores(self, probabilities: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
        """How unlike the training images each image is, by the model's own score."""
        kind = (self.metadata.get("unknown") or {}).get("score", "msp")
        return unknown_scores(kind, probabilities, logits)

    def predictions(self, names: list[str], images, top_k: int = 3) -> list[Prediction]:
        """Predict decoded images and name the top ``top_k`` classes of each."""
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k!r}")
        top_k = min(top_k, len(self.classes))
        if not len(names):
            return []
        probabilities, logits = self.predict_outputs(images)
        unusual = self.unknown_scores(probabilities, logits)
        return [
            self._decide(name, row, float(score), top_k)
            for name, row, score in zip(names, probabilities, unusual, strict=True)
        ]

    def _decide(self, name: str, row: np.ndarray, unusual: float, top_k: int) -> Prediction:
        """The answer for one row of probabilities, with the model's thresholds applied."""
        order = np.argsort(row)[::-1][:top_k]
        best = int(order[0])
        prediction = Prediction(
            path=name,
            label=self.classes[best],
            confidence=float(row[best]),
            top_k=[(self.classes[int(i)], float(row[int(i)])) for i in order],
        )
        unknown = self.metadata.get("unknown")
        if unknown:
            prediction.unknown_score = unusual
            prediction.unknown = unusual > float(unknown["threshold"])
            if prediction.unknown:
                prediction.label = UNKNOWN
        point = self.metadata.get("operating_point")
        if point:
            ok_index = self.classes.index(point["ok_class"])
            prediction.defect_score = float(1.0 - row[ok_index])
            over = prediction.defect_score >= float(point["threshold"])
            prediction.defect = bool(over or prediction.unknown)
        return prediction

    def prepare_bytes(
        self, data: bytes, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> np.ndarray:
        """Encoded bytes -> the ``(S, S, 3)`` float image this model takes."""
        return prepare_image_bytes(data, self.image_size, name, max_pixels, self.resize)

    def predict_bytes(self, data: bytes, name: str = "upload", top_k: int = 3) -> Prediction:
        """Predict one encoded image; an unreadable one gives a Prediction with ``error``."""
        try:
            image = self.prepare_bytes(data, name)
        except ImageDecodeError as err:
            return Prediction(path=name, error=err.reason)
        return self.predictions([name], image[None], top_k)[0]

    def predict(
        self, paths: Iterable[str | Path], batch_size: int = 32, top_k: int = 3
    ) -> list[Prediction]:
        """Predict files; an unreadable file gives a :class:`Prediction` with ``error`` set."""
        return list(self.iter_predict(paths, batch_size, top_k))

    def iter_predict(
        self, paths: Iterable[SourceItem | str], batch_size: int = 32, top_k: int = 3
    ) -> Iterator[Prediction]:
        """Stream predictions in input order (see :meth:`iter_batches`)."""
        for batch in self.iter_batches(paths, batch_size, top_k):
            yield from batch.predictions

    def iter_batches(
        self, paths: Iterable[SourceItem | str], batch_size: int = 32, top_k: int = 3
    ) -> Iterator[PredictionBatch]:
        """Predict batches through tf.data, holding a few batches at a time.

        ``paths`` may be lazy (see :func:`~defectscope.inference.sources.stream_sources`); an
        item ``(source, error)`` passes through as an error row.
        """
        stream = stream_images(paths, self.image_size, batch_size, self.resize)
        for names, images, errors in stream:
            readable = [index for index, error in enumerate(errors) if not error]
            ok_images = images[readable]
            predicted = iter(self.predictions([names[i] for i in readable], ok_images, top_k))
            rows = []
            for name, error in zip(names, errors, strict=True):
                if error:
                    log.debug("cannot predict %s: %s", name, error)
                    rows.append(Prediction(path=name, error=error))
                else:
                    rows.append(next(predicted))
            yield PredictionBatch(rows, ok_images)

    def explain(self, images, class_indices=None) -> np.ndarray:
        """Grad-CAM maps ``(N, S, S)`` in [0, 1] of decoded images (of the top class by default).

        The explaining Keras model (this one, or an export's source model) is loaded once.
        """
        if self._gradcam is None:
            self._gradcam = GradCam(keras_model_for(self.backend), self.gives_logits)
        return self._gradcam.heatmaps(images, class_indices)[0]


def _pixel_reader(image_size: int):
    """A py_function body: ``(path, error)`` -> the file's pixels and ``b""``, or empty pixels
    and the reason it cannot be predicted. Validation and decode are one step, so whatever
    is accepted here is what the model sees."""
    empty = np.zeros((0, 0, 3), np.uint8)

    def read(path, error):
        if error.numpy():
            return empty, error.numpy()
        name = path.numpy().decode("utf-8", "surrogateescape")
        try:
            return read_pixels(name, image_size), b""
        except ImageDecodeError as err:
            return empty, err.reason.encode("utf-8")

    return read


def stream_images(
    paths: Iterable[SourceItem | str], image_size: int, batch_size: int, resize: str = "stretch"
):
    """Batches ``(names, images, errors)``: lists of str, a float32 array, ``""`` when readable.

    A lazy ``paths`` is consumed as the batches are drawn, with bounded read-ahead; an error
    raised by ``paths`` itself is raised again after the batches read before it.
    """
    failures: list[BaseException] = []
    batches = create_image_batches(paths, image_size, batch_size, resize, failures)
    for names, images, errors in batches:
        yield (
            [n.decode("utf-8", "surrogateescape") for n in names.numpy()],
            images.numpy(),
            [e.decode("utf-8", "replace") for e in errors.numpy()],
        )
    if failures:
        raise failures[0]


def create_image_batches(
    paths: Iterable[SourceItem | str],
    image_size: int,
    batch_size: int,
    resize: str,
    failures: list[BaseException],
):
    """The dataset behind :func:`stream_images`: batches of ``(paths, images, errors)`` byte
    strings and float32 pixels; an error raised by ``paths`` ends it and joins ``failures``."""
    import tensorflow as tf

    read = _pixel_reader(image_size)

    def prepare(path, error):
        pixels, reason = tf.py_function(read, [path, error], [tf.uint8, tf.string])
        pixels.set_shape([None, None, 3])
        reason.set_shape([])
        blank = tf.zeros([image_size, image_size, 3], tf.float32)
        image = tf.cond(
            tf.equal(reason, b""),
            lambda: resize_for_model(pixels, image_size, resize),
            lambda: blank,
        )
        return path, image, reason

    dataset = path_dataset(paths, failures)
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return without_autotune_thread(dataset.batch(batch_size).prefetch(2))


def path_dataset(paths: Iterable[SourceItem | str], failures: list[BaseException]):
    """``(path, error)`` string pairs drawn from ``paths`` one at a time, in order; an error
    raised by ``paths`` ends the dataset and is appended to ``failures``.

    Drawn by ``tf.numpy_function`` over a counter, not by ``Dataset.from_generator``: TensorFlow
    2.21's generator op lowers glibc's trim threshold for the whole process (its log: "Memory
    patch applied: M_TRIM_THRESHOLD=128 kb"), after which every batch maps its buffers afresh
    (docs/detection.md measured it in training)."""
    import tensorflow as tf

    items = iter(paths)

    def pull(_index) -> tuple[np.ndarray, np.ndarray, np.bool_]:
        try:
            item = next(items)
        except StopIteration:
            return np.array(b"", object), np.array(b"", object), np.bool_(True)
        except Exception as err:  # raised again by stream_images, not wrapped by tf.data
            failures.append(err)
            return np.array(b"", object), np.array(b"", object), np.bool_(True)
        path, error = item if isinstance(item, tuple) else (str(item), "")
        encoded = path.encode("utf-8", "surrogateescape"), error.encode("utf-8")
        return np.array(encoded[0], object), np.array(encoded[1], object), np.bool_(False)

    def pulled(index):
        path, error, done = tf.numpy_function(
            pull, [index], [tf.string, tf.string, tf.bool], stateful=True
        )
        return tf.ensure_shape(path, []), tf.ensure_shape(error, []), tf.ensure_shape(done, [])

    drawn = tf.data.Dataset.counter().map(pulled)  # sequential: one next() at a time
    return drawn.take_while(lambda path, error, done: tf.logical_not(done)).map(
        lambda path, error, done: (path, error)
    )


def load_model(path: str | Path) -> Classifier:
    """Load a run folder, ``.keras`` file or export (SavedModel, TFLite, ONNX) with its metadata.

    Keras files load in safe mode: a model that would run arbitrary code is refused.
    """
    location = locate_model(path)
    metadata = read_metadata(location)
    import_tensorflow_quietly()
    return Classifier(open_backend(location, metadata))
