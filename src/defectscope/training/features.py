"""Backbone features of a split's images, computed once and cached on disk.

Phase 1 trains the head on these, so a head epoch costs a matrix product instead of a pass of
Xception over every image. Besides the clean images, the training set can add augmented copies
(the augmentation of phase 2, seeded), so that the head phase 2 starts from has already seen
flipped, rotated, noisy and blurred images. The cache key covers everything the features
depend on: the weights, the input size, the exact images (shard hashes or file list) of the
split and, for an augmented copy, the augmentation and its seed.
"""

from __future__ import annotations

import dataclasses
import functools
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
from defectscope.data.augment import AugmentConfig
from defectscope.data.pipeline import DataSource, create_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedFeatures:
    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int32
    seconds: float  # time it took to compute them (0 when read from the cache)
    from_cache: bool


def weights_identity(weights: str) -> str:
    """What cached features depend on: a weights file's content (so a copy of it, or the same
    file with a new timestamp, finds the cache), else the name of the weights ("none")."""
    path = Path(weights)
    return _content_hash(path) if path.is_file() else weights


def _content_hash(path: Path) -> str:
    """A file's SHA-256, hashed once per process while its size and timestamp stay the same
    (a run asks for the weights' and the shards' once per cache: 0.14 s each for Xception's)."""
    status = path.stat()
    return _remembered_sha256(str(path.resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _remembered_sha256(path: str, size: int, modified_ns: int) -> str:
    return file_sha256(path)


def source_identity(source: DataSource) -> str:
    if source.kind == "tfrecord":
        shards = ",".join(_content_hash(Path(path)) for path in source.files)
        if source.only is None:
            return shards
        subset = hashlib.sha256("\n".join(sorted(source.only)).encode()).hexdigest()
        return f"{shards}|{subset}"
    return ",".join(source.files)


@dataclass(frozen=True)
class AugmentedCopy:
    """One seeded, augmented pass over a split (``None`` in its place means the clean images)."""

    augment: AugmentConfig
    seed: int


def cache_key(
    source: DataSource,
    weights: str,
    image_size: int,
    resize: str = "stretch",
    copy: AugmentedCopy | None = None,
) -> str:
    parts = [weights_identity(weights), image_size, source.split, source_identity(source)]
    if resize != "stretch":
        parts.append(resize)
    if copy is not None:
        parts.append([dataclasses.asdict(copy.augment), copy.seed])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def extract_features(
    feature_model,
    source: DataSource,
    image_size: int,
    batch_size: int = 32,
    resize: str = "stretch",
    copy: AugmentedCopy | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``feature_model`` over every image of ``source``: clean and in source order, or, for
    an augmented ``copy``, in the shuffled order of its seed (labels travel with the images)."""
    dataset = create_dataset(
        source,
        image_size=image_size,
        batch_size=batch_size,
        resize=resize,
        training=copy is not None,
        augment=copy.augment if copy else None,
        seed=copy.seed if copy else None,
    )
    features, labels = [], []
    what = "augmented copy" if copy else "features"
    counter = Progress(f"{what} of {source.split}", source.num_examples)
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
    copy: AugmentedCopy | None = None,
) -> CachedFeatures:
    """Features of ``source`` (or of one augmented ``copy`` of it) from ``cache_dir`` if present,
    else computed and stored atomically."""
    key = cache_key(source, weights, image_size, resize, copy)
    path = cache_dir / f"{source.split}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return CachedFeatures(stored["features"], stored["labels"], 0.0, True)
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring unreadable feature cache %s (%s)", path, err)
    started = time.perf_counter()
    features, labels = extract_features(feature_model, source, image_size, batch_size, resize, copy)
    seconds = time.perf_counter() - started
    buffer = io.BytesIO()
    np.savez(buffer, features=features, labels=labels)
    atomic_write_bytes(path, buffer.getvalue())
    log.info(
        "%s of %d %s images in %.0f s (%.1f img/s), cached in %s",
        "augmented copy" if copy else "features",
        len(labels),
        source.split,
        seconds,
        len(labels) / seconds,
        path,
    )
    return CachedFeatures(features, labels, seconds, False)
