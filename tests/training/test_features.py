"""Cached backbone features: clean images, and the seeded augmented copies phase 1 adds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defectscope.core.errors import ConfigError
from defectscope.data.augment import AugmentConfig
from defectscope.data.pipeline import open_source
from defectscope.training.config import resolve_config
from defectscope.training.features import AugmentedCopy, cache_key, cached_features
from defectscope.training.head import augmented_copies


@pytest.fixture(scope="module")
def pooling():
    """A cheap stand-in for the backbone: mean and spread of each channel, per image."""
    import keras

    images = keras.Input((40, 40, 3))
    mean = keras.layers.GlobalAveragePooling2D()(images)
    spread = keras.layers.GlobalMaxPooling2D()(images)
    return keras.Model(images, keras.layers.Concatenate()([mean, spread]))


def test_an_augmented_copy_is_seeded_cached_and_keyed_apart(
    pooling, synthetic_records: Path, tmp_path: Path
) -> None:
    source = open_source(synthetic_records, "train")
    copy = AugmentedCopy(AugmentConfig(), seed=11)
    clean = cached_features(pooling, source, "none", 40, tmp_path, 8)
    first = cached_features(pooling, source, "none", 40, tmp_path, 8, copy=copy)
    again = cached_features(pooling, source, "none", 40, tmp_path / "other", 8, copy=copy)
    read = cached_features(pooling, source, "none", 40, tmp_path, 8, copy=copy)
    assert not first.from_cache and read.from_cache and not again.from_cache
    # the same seed gives the same images whether computed or read back
    np.testing.assert_allclose(again.features, first.features, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(read.labels, first.labels)
    # every image once, labels still paired with their images
    assert sorted(first.labels) == sorted(clean.labels)
    assert not np.allclose(np.sort(first.features, axis=0), np.sort(clean.features, axis=0))
    keys = {
        cache_key(source, "none", 40),
        cache_key(source, "none", 40, copy=copy),
        cache_key(source, "none", 40, copy=AugmentedCopy(AugmentConfig(), seed=12)),
        cache_key(source, "none", 40, copy=AugmentedCopy(AugmentConfig(noise_prob=0), seed=11)),
    }
    assert len(keys) == 4
    assert len(list(tmp_path.glob("train-*.npz"))) == 2


def test_phase_one_adds_distinct_copies_of_the_phase_two_augmentation() -> None:
    config = resolve_config(data="x", seed=3, head={"augmented_copies": 3})
    copies = augmented_copies(config)
    assert len(copies) == 3 and len({c.seed for c in copies}) == 3
    assert all(c.augment == config.augment for c in copies)
    assert augmented_copies(resolve_config(data="x", head={"augmented_copies": 0})) == []
    with pytest.raises(ConfigError, match="augmented_copies must be >= 0, got -1"):
        resolve_config(data="x", head={"augmented_copies": -1})


def test_the_cache_key_follows_the_weights_content_not_their_file(
    synthetic_records: Path, tmp_path: Path
) -> None:
    """A copy of the weights, or the same file with a new timestamp (a re-provisioned
    machine, a restored backup), finds the cache; other weights do not."""
    import os

    source = open_source(synthetic_records, "train")
    weights = tmp_path / "a.weights.h5"
    weights.write_bytes(b"weights one")
    key = cache_key(source, str(weights), 96)
    copy = tmp_path / "copy" / "b.weights.h5"
    copy.parent.mkdir()
    copy.write_bytes(b"weights one")
    os.utime(copy, (1, 1))
    assert cache_key(source, str(copy), 96) == key
    weights.write_bytes(b"weights two")
    os.utime(weights, (1, 1))
    assert cache_key(source, str(weights), 96) != key
    assert cache_key(source, "none", 96) != key


def test_an_unchanged_file_is_hashed_once_per_process(
    synthetic_records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from defectscope.training import features

    hashed = []
    real = features.file_sha256
    monkeypatch.setattr(features, "file_sha256", lambda path: hashed.append(path) or real(path))
    source = open_source(synthetic_records, "train")
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"weights one")
    first = cache_key(source, str(weights), 96)
    assert cache_key(source, str(weights), 96) == first
    assert hashed.count(str(weights.resolve())) == 1
    weights.write_bytes(b"weights two")  # same size: the new timestamp tells
    os.utime(weights, ns=(1, 1))
    assert cache_key(source, str(weights), 96) != first
    assert hashed.count(str(weights.resolve())) == 2
