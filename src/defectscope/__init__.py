"""defectscope: classify surface defects in industrial images with TensorFlow + Keras 3."""

from __future__ import annotations

__version__ = "0.1.0"

from defectscope.data.layout import discover_dataset
from defectscope.data.pipeline import create_dataset, open_source
from defectscope.data.tfrecord_writer import convert_dataset

__all__ = ["__version__", "convert_dataset", "create_dataset", "discover_dataset", "open_source"]
