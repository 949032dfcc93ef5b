"""defectscope: classify surface defects in industrial images with TensorFlow + Keras 3."""

from __future__ import annotations

__version__ = "0.1.0"

from defectscope.data.layout import discover_dataset
from defectscope.data.pipeline import create_dataset, open_source
from defectscope.data.tfrecord_writer import convert_dataset
from defectscope.evaluation.evaluate import evaluate
from defectscope.inference.classifier import Classifier, Prediction, load_model
from defectscope.training.config import TrainConfig, resolve_config
from defectscope.training.trainer import train

__all__ = [
    "Classifier",
    "Prediction",
    "TrainConfig",
    "__version__",
    "convert_dataset",
    "create_dataset",
    "discover_dataset",
    "evaluate",
    "load_model",
    "open_source",
    "resolve_config",
    "train",
]
