"""Load a trained model (run folder, ``.keras`` file or any export) and predict images.

Images are decoded by the data layer's one path (:func:`canonical_image` then
:func:`preprocess_encoded`), so a prediction sees exactly the pixels training and evaluation saw.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from defectscope import __version__
from defectscope.atomic_io import atomic_write_json
from defectscope.data.images import ImageDecodeError, is_image_path, read_canonical_image
from defectscope.deploy.backends import (
    METADATA_NAME,
    ModelLoadError,
    ModelLocation,
    locate_model,
    open_backend,
    read_metadata,
)

__all__ = ["Classifier", "ModelLoadError", "Prediction", "expand_sources", "load_model"]
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
        self, paths: Iterable[str | Path], batch_size: int = 32, top_k: int = 3
    ) -> Iterator[Prediction]:
        import tensorflow as tf

        from defectscope.data.pipeline import preprocess_encoded

        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        pending: list[tuple[str, bytes | None, str]] = []  # in input order, errors included

        def flush() -> Iterator[Prediction]:
            encoded = [data for _, data, _ in pending if data is not None]
            rows = iter([])
            if encoded:
                images = tf.stack([preprocess_encoded(data, self.image_size) for data in encoded])
                rows = iter(self.predict_images(images))
            for name, data, error in pending:
                if data is None:
                    yield Prediction(path=name, error=error)
                    continue
                row = next(rows)
                order = np.argsort(row)[::-1][:top_k]
                yield Prediction(
                    path=name,
                    label=self.classes[int(order[0])],
                    confidence=float(row[int(order[0])]),
                    top_k=[(self.classes[int(i)], float(row[int(i)])) for i in order],
                )
            pending.clear()

        readable = 0
        for path in paths:
            try:
                pending.append((str(path), read_canonical_image(path).encoded, ""))
                readable += 1
            except ImageDecodeError as err:
                log.warning("cannot predict %s", err)
                pending.append((str(path), None, err.reason))
            if readable >= batch_size:
                yield from flush()
                readable = 0
        if pending:
            yield from flush()


def load_model(path: str | Path) -> Classifier:
    """Load a run folder, ``.keras`` file or export (SavedModel, TFLite, ONNX) with its metadata.

    Keras files load in safe mode: a model that would run arbitrary code is refused.
    """
    location = locate_model(path)
    metadata = read_metadata(location)
    return Classifier(open_backend(location), metadata, location)


def expand_sources(sources: Iterable[str | Path]) -> Iterator[Path | tuple[str, str]]:
    """Image files of files, folders (recursive) and globs; ``(source, error)`` for a miss."""
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_file():
            yield path
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and is_image_path(p) and not p.name.startswith(".")
            )
            if not found:
                yield (text, "folder holds no image file")
            yield from found
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                yield (text, "pattern matches no file")
            yield from matches
        else:
            yield (text, "no such file or folder")
