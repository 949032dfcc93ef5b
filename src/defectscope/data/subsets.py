"""Subsets of a data source by image id, and the index a split is planned from.

The selection split (model selection, carved from the training split) and the rest of the
training split are subsets of one source: for a folder source its file list is filtered, for
TFRecords the pipeline reads only the chosen ids (``DataSource.only``).
"""

from __future__ import annotations

import dataclasses
import hashlib

from defectscope.core.files import DEFAULT_MAX_IMAGE_BYTES, read_regular_file
from defectscope.data.pipeline import DataSource
from defectscope.data.splits import SplitItem
from defectscope.data.tfdata import record_dataset
from defectscope.data.tfrecord_features import (
    IMAGE_CLASS_LABEL,
    IMAGE_KEY_SHA256,
    IMAGE_SOURCE_ID,
)


def _tfrecord_index(source: DataSource) -> list[tuple[str, int, str]]:
    """``(source_id, label, content sha256)`` of every record, without decoding an image."""
    import tensorflow as tf

    spec = {
        IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
        IMAGE_CLASS_LABEL: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_KEY_SHA256: tf.io.FixedLenFeature([], tf.string),
    }
    records = record_dataset(source.files).map(
        lambda serialized: tf.io.parse_single_example(serialized, spec)
    )
    return [
        (r[IMAGE_SOURCE_ID].decode(), int(r[IMAGE_CLASS_LABEL]), r[IMAGE_KEY_SHA256].decode())
        for r in records.as_numpy_iterator()
    ]


def _folder_index(source: DataSource) -> list[tuple[str, int, str]]:
    return [
        (
            source_id,
            label,
            hashlib.sha256(read_regular_file(path, DEFAULT_MAX_IMAGE_BYTES)).hexdigest(),
        )
        for source_id, label, path in zip(
            source.source_ids, source.labels, source.files, strict=True
        )
    ]


def split_items(source: DataSource) -> list[SplitItem]:
    """Every image of ``source`` as a :class:`SplitItem` (id, class, content)."""
    rows = _tfrecord_index(source) if source.kind == "tfrecord" else _folder_index(source)
    if source.only is not None:
        rows = [row for row in rows if row[0] in source.only]
    return [
        SplitItem(source_id, source.classes[label], content) for source_id, label, content in rows
    ]


def subset(source: DataSource, ids: set[str], name: str) -> DataSource:
    """The images of ``source`` whose ids are in ``ids``, as a source named ``name``."""
    if source.kind == "tfrecord":
        kept = frozenset(ids if source.only is None else ids & source.only)
        return dataclasses.replace(source, split=name, only=kept, num_examples=len(kept))
    keep = [i for i, source_id in enumerate(source.source_ids) if source_id in ids]
    return dataclasses.replace(
        source,
        split=name,
        num_examples=len(keep),
        files=tuple(source.files[i] for i in keep),
        labels=tuple(source.labels[i] for i in keep),
        source_ids=tuple(source.source_ids[i] for i in keep),
    )
