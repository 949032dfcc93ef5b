"""Conversion of the real NEU-DET dataset (skipped with a reason when it is absent)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from defectscope.data.neu import NEU_CLASSES
from defectscope.data.pipeline import create_dataset, open_source

pytestmark = pytest.mark.real_data


def test_real_conversion_counts(neu_records: tuple[Path, dict]) -> None:
    _, manifest = neu_records
    splits = manifest["splits"]
    assert manifest["classes"] == list(NEU_CLASSES)
    assert splits["train"]["num_records"] == 1440
    assert splits["validation"]["num_records"] == 360
    assert set(splits["train"]["class_counts"].values()) == {240}
    assert set(splits["validation"]["class_counts"].values()) == {60}
    assert splits["train"]["num_boxes"] + splits["validation"]["num_boxes"] == 4189
    assert manifest["skipped"] == []


def test_real_quirks_are_reported_not_fatal(neu_records: tuple[Path, dict]) -> None:
    _, manifest = neu_records
    kinds = Counter(p["kind"] for p in manifest["problems"])
    assert kinds["filename_mismatch"] == 174  # <filename> without extension, paired by stem
    assert kinds["class_mismatch"] > 0  # NEU images hold boxes of other classes too
    assert set(kinds) == {"filename_mismatch", "class_mismatch"}


def test_real_pipeline_reads_every_validation_image(neu_records: tuple[Path, dict]) -> None:
    out, _ = neu_records
    source = open_source(out, "validation")
    labels = Counter()
    for images, batch_labels in create_dataset(source, image_size=200, batch_size=64):
        assert images.shape[1:] == (200, 200, 3)
        labels.update(batch_labels.numpy().tolist())
    assert labels == dict.fromkeys(range(6), 60)
