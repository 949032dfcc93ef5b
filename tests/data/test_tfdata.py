"""tf.data settings shared by every pipeline: no autotuning thread, whose wake-up an
iterator's end could wait for (up to 60 s; docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from defectscope.data.detection import create_detection_dataset, create_mirrored_epoch
from defectscope.data.pipeline import create_dataset, open_source
from defectscope.data.tfdata import record_dataset, without_autotune_thread


def autotune_thread_off(dataset) -> bool:
    return dataset.options().autotune.enabled is False


def test_the_thread_is_off_and_the_elements_are_kept() -> None:
    plain = tf.data.Dataset.range(5).map(lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE)
    quiet = without_autotune_thread(plain)
    assert not autotune_thread_off(plain)  # the default runs the thread
    assert autotune_thread_off(quiet)
    assert list(quiet.as_numpy_iterator()) == [0, 2, 4, 6, 8]


def test_records_are_read_in_order_without_the_thread(synthetic_records: Path) -> None:
    source = open_source(synthetic_records, "validation")
    records = record_dataset(source.files)
    assert autotune_thread_off(records)
    expected = [r.numpy() for f in source.files for r in tf.data.TFRecordDataset(f)]
    assert [r.numpy() for r in records] == expected


def test_every_training_and_evaluation_pipeline_runs_without_the_thread(
    synthetic_records: Path,
) -> None:
    source = open_source(synthetic_records, "train")
    pipelines = {
        "classifier training": create_dataset(source, image_size=64, batch_size=4, training=True),
        "classifier evaluation": create_dataset(source, image_size=64, batch_size=4),
        "detector images": create_detection_dataset(source, 64, 4),
        "detector epoch": create_mirrored_epoch(source, 64, 4, seed=1),
    }
    assert [name for name, data in pipelines.items() if not autotune_thread_off(data)] == []
    for data in pipelines.values():  # the transformations after the option keep it
        next(iter(data))
