"""defectscope: find surface defects in industrial images with TensorFlow + Keras 3.

The public API is imported on first use, so ``import defectscope`` (and ``defectscope --help``)
does not load TensorFlow::

    import defectscope
    classifier = defectscope.load_model("runs/neu")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from defectscope.core.version import __version__

_PUBLIC = {
    "Classifier": "defectscope.inference.classifier",
    "Prediction": "defectscope.inference.classifier",
    "load_model": "defectscope.inference.classifier",
    "predict_files": "defectscope.inference.batch",
    "Detector": "defectscope.inference.detector",
    "Detection": "defectscope.inference.detector",
    "load_detector": "defectscope.inference.detector",
    "evaluate_detector": "defectscope.evaluation.evaluate_detector",
    "TrainConfig": "defectscope.training.config",
    "resolve_config": "defectscope.training.config",
    "train": "defectscope.training.trainer",
    "resume": "defectscope.training.trainer",
    "evaluate": "defectscope.evaluation.evaluate",
    "convert_dataset": "defectscope.data.tfrecord_writer",
    "create_dataset": "defectscope.data.pipeline",
    "open_source": "defectscope.data.pipeline",
    "discover_dataset": "defectscope.data.layout",
    "DefectscopeError": "defectscope.core.errors",
}
__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'defectscope' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
