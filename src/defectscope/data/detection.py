"""Images with their boxes, for the detector: the same records, decoding and resize.

Elements are ``(image, boxes, labels, source_id)``: the float32 image at the detector's square
input (the one decode path, stretched), the boxes as pixel ``xyxy`` corners of that input padded
to :func:`box_rows` rows (every box of every image: none is dropped), the class of each (-1 for
padding, and for a box whose class is not one of the dataset's classes). ``flip`` mirrors image
and boxes together, left-right, up-down or along the main diagonal ("transpose": a quarter turn
and a mirror), for the cached augmented copies of the training set.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from defectscope.core.errors import ConfigError
from defectscope.data.pipeline import (
    DataSource,
    DataSourceError,
    _member_of,
    is_tfrecord_folder,
    preprocess_encoded,
)
from defectscope.data.tfrecord_features import (
    IMAGE_ENCODED,
    IMAGE_SOURCE_ID,
    OBJECT_BBOX_XMAX,
    OBJECT_BBOX_XMIN,
    OBJECT_BBOX_YMAX,
    OBJECT_BBOX_YMIN,
    OBJECT_CLASS_LABEL,
    parse_example,
)

log = logging.getLogger(__name__)

MIN_BOX_ROWS = 64  # box rows per image at least (NEU-DET has at most 9 boxes in one image)
FLIPS = ("none", "horizontal", "vertical", "transpose")


def records_for(data: str | Path, out: Path | None = None) -> Path:
    """A TFRecord folder for ``data``: itself, or a conversion of the dataset root into ``out``
    (a temporary folder by default)."""
    from defectscope.data.tfrecord_writer import convert_dataset

    if is_tfrecord_folder(data):
        return Path(data)
    if out is not None and is_tfrecord_folder(out):  # converted before (a resumed run)
        return out
    out = out or Path(tempfile.mkdtemp(prefix="defectscope-records-"))
    convert_dataset(data, out, num_shards=2, overwrite=True)
    return out


def most_boxes(source: DataSource) -> int:
    """The most boxes one image of ``source``'s shards holds (one pass over the labels)."""
    import tensorflow as tf

    records = tf.data.TFRecordDataset(list(source.files))
    counts = records.map(
        lambda serialized: tf.size(parse_example(serialized)[OBJECT_CLASS_LABEL]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return int(counts.reduce(tf.constant(0), tf.maximum))


def box_table(source: DataSource):
    """Every box of ``source``'s images (its ``only`` members): normalised ``xyxy`` corners
    (N x 4 float32, of the image's width and height) and class labels (N int64)."""
    import numpy as np
    import tensorflow as tf

    def element(serialized):
        parsed = parse_example(serialized)
        corners = [OBJECT_BBOX_XMIN, OBJECT_BBOX_YMIN, OBJECT_BBOX_XMAX, OBJECT_BBOX_YMAX]
        boxes = tf.stack([parsed[key] for key in corners], axis=-1)
        return boxes, parsed[OBJECT_CLASS_LABEL], parsed[IMAGE_SOURCE_ID]

    items = tf.data.TFRecordDataset(list(source.files)).map(element)
    if source.only is not None:
        keep = _member_of(source.only)
        items = items.filter(lambda boxes, labels, source_id: keep(boxes, labels, source_id))
    boxes, labels = [np.zeros((0, 4), np.float32)], [np.zeros((0,), np.int64)]
    for image_boxes, image_labels, _ in items.as_numpy_iterator():
        boxes.append(image_boxes.astype(np.float32))
        labels.append(image_labels.astype(np.int64))
    return np.concatenate(boxes), np.concatenate(labels)


def box_rows(source: DataSource) -> int:
    """Rows of boxes per image for ``source``: :data:`MIN_BOX_ROWS`, or the most boxes one image
    of its shards holds when that is more."""
    most = most_boxes(source)
    if most > MIN_BOX_ROWS:
        log.info(
            "an image of %s holds %d boxes: each image is padded to as many rows",
            source.split,
            most,
        )
    return max(MIN_BOX_ROWS, most)


def _boxes(parsed: dict, size: int, flip: str, rows: int):
    import tensorflow as tf

    xmin, xmax = parsed[OBJECT_BBOX_XMIN], parsed[OBJECT_BBOX_XMAX]
    ymin, ymax = parsed[OBJECT_BBOX_YMIN], parsed[OBJECT_BBOX_YMAX]
    if flip == "horizontal":
        xmin, xmax = 1.0 - xmax, 1.0 - xmin
    elif flip == "vertical":
        ymin, ymax = 1.0 - ymax, 1.0 - ymin
    elif flip == "transpose":
        xmin, ymin, xmax, ymax = ymin, xmin, ymax, xmax
    boxes = tf.stack([xmin, ymin, xmax, ymax], axis=-1) * float(size)
    labels = tf.cast(parsed[OBJECT_CLASS_LABEL], tf.float32)
    pad = rows - tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, pad], [0, 0]])
    labels = tf.pad(labels, [[0, pad]], constant_values=-1.0)
    return tf.ensure_shape(boxes, [rows, 4]), tf.ensure_shape(labels, [rows])


def create_detection_dataset(
    source: DataSource,
    image_size: int,
    batch_size: int = 16,
    flip: str = "none",
    shuffle: bool = False,
    seed: int | None = None,
):
    """Batched ``(images, {"boxes", "labels"}, source_ids)`` of a TFRecord source."""
    import tensorflow as tf

    if source.kind != "tfrecord":
        raise DataSourceError(source.path, "detection reads TFRecords (convert the dataset)")
    if flip not in FLIPS:
        raise ConfigError(f"flip must be one of {FLIPS}, got {flip!r}")
    rows = box_rows(source)
    records = tf.data.TFRecordDataset(list(source.files))
    if shuffle:
        records = records.shuffle(4096, seed=seed)

    def element(serialized):
        parsed = parse_example(serialized)
        image = preprocess_encoded(parsed[IMAGE_ENCODED], image_size)
        if flip == "horizontal":
            image = tf.image.flip_left_right(image)
        elif flip == "vertical":
            image = tf.image.flip_up_down(image)
        elif flip == "transpose":
            image = tf.image.transpose(image)
        boxes, labels = _boxes(parsed, image_size, flip, rows)
        return image, {"boxes": boxes, "labels": labels}, parsed[IMAGE_SOURCE_ID]

    dataset = records.map(element, num_parallel_calls=tf.data.AUTOTUNE)
    if source.only is not None:
        keep = _member_of(source.only)
        dataset = dataset.filter(lambda image, target, source_id: keep(image, 0, source_id))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
