"""Backbone features of un-augmented images, computed once and cached on disk.

Phase 1 trains the head on these, so a head epoch costs a matrix product instead of a pass of
Xception over every image. The cache key covers everything the features depend on: the weights,
the input size and the exact images (shard hashes or file list) of the split.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectscope.core.atomic_io import atomic_write_bytes
from defectscope.core.files import file_sha256
from defectscope.core.progress import Progress
from defectscope.data.pipeline import DataSource, create_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedFeatures:
    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int32
    seconds: float  # time it took to compute them (0 when read from the cache)
    from_cache: bool


def _weights_identity(weights: str) -> str:
    path = Path(weights)
    if path.is_file():
        stat = path.stat()
        return f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
    return weights


def _source_identity(source: DataSource) -> str:
    if source.kind == "tfrecord":
        shards = ",".join(file_sha256(path) for path in source.files)
        if source.only is None:
            return shards
        subset = hashlib.sha256("\n".join(sorted(source.only)).encode()).hexdigest()
        return f"{shards}|{subset}"
    return ",".join(source.files)


def cache_key(source: DataSource, weights: str, image_size: int, resize: str = "stretch") -> str:
    parts = [_weights_identity(weights), image_size, source.split, _source_identity(source)]
    identity = json.dumps(parts if resize == "stretch" else [*parts, resize])
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


def extract_features(
    feature_model,
    source: DataSource,
    image_size: int,
    batch_size: int = 32,
    resize: str = "stretch",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``feature_model`` over every image of ``source`` (no augmentation), in source order."""
    dataset = create_dataset(source, image_size=image_size, batch_size=batch_size, resize=resize)
    features, labels = [], []
    counter = Progress(f"features of {source.split}", source.num_examples)
    for images, batch_labels in dataset:
        features.append(feature_model(images, training=False).numpy())
        labels.append(batch_labels.numpy())
        counter.update(len(labels[-1]))
    counter.close()
    return np.concatenate(features).astype(np.float32), np.concatenate(labels).astype(np.int32)


def cached_features(
    feature_model,
    source: DataSource,
    weights: str,
    image_size: int,
    cache_dir: Path,
    batch_size: int = 32,
    resize: str = "stretch",
) -> CachedFeatures:
    """Features of ``source`` from ``cache_dir`` if present, else computed and stored atomically."""
    path = cache_dir / f"{source.split}-{cache_key(source, weights, image_size, resize)}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return CachedFeatures(stored["features"], stored["labels"], 0.0, True)
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring unreadable feature cache %s (%s)", path, err)
    started = time.perf_counter()
    features, labels = extract_features(feature_model, source, image_size, batch_size, resize)
    seconds = time.perf_counter() - started
    buffer = io.BytesIO()
    np.savez(buffer, features=features, labels=labels)
    atomic_write_bytes(path, buffer.getvalue())
    log.info(
        "features of %d %s images in %.0f s (%.1f img/s), cached in %s",
        len(labels),
        source.split,
        seconds,
        len(labels) / seconds,
        path,
    )
    return CachedFeatures(features, labels, seconds, False)
