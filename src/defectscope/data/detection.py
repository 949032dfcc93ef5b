"""Images with their boxes, for the detector: the same records, decoding and resize.

Elements are ``(image, boxes, labels, source_id)``: the float32 image at the detector's square
input (the one decode path, stretched), the boxes as pixel ``xyxy`` corners of that input padded
to :func:`box_rows` rows (every box of every image: none is dropped), the class of each (-1 for
padding, and for a box whose class is not one of the dataset's classes). ``copy`` names the
cached augmented copies of the training set: a mirroring of image and boxes together
(left-right, up-down, or along the main diagonal, "transpose": a quarter turn and a mirror), or
``crop-N``, a random window of each image enlarged to the input (scale and position jitter),
drawn from ``N`` and the image's id, so a copy is the same whenever it is computed.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from pathlib import Path

from defectscope.core.errors import ConfigError
from defectscope.data.images import decode_image_tensor
from defectscope.data.pipeline import (
    DataSource,
    DataSourceError,
    _member_of,
    is_tfrecord_folder,
    preprocess_encoded,
    resize_for_model,
)
from defectscope.data.tfdata import record_dataset
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
# crop copies: a window whose sides are this share of the image's (drawn uniformly), at a
# random place, mirrored left-right and up-down at random; a box cut by the window stays
# (clipped to it) when at least CROP_KEEP of its area is inside, else it is dropped
CROP_SIDE = (0.6, 1.0)
CROP_KEEP = 0.25
SHUFFLE_BUFFER = 4096  # records shuffled in memory per epoch (NEU-DET's fit set: 1,296)
_CROP_NAME = re.compile(r"crop-(\d+)")


def crop_copy(index: int) -> str:
    """The name of the ``index``-th random-crop copy (its seed)."""
    return f"crop-{index}"


def crop_seed(copy: str) -> int | None:
    """The seed of a crop copy's name, None for a mirroring (:data:`FLIPS`); any other name is
    a ConfigError."""
    if copy in FLIPS:
        return None
    crop = _CROP_NAME.fullmatch(str(copy))
    if crop is None:
        raise ConfigError(f"a cached copy must be one of {FLIPS} or crop-N, got {copy!r}")
    return int(crop.group(1))


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

    records = record_dataset(source.files)
    counts = records.map(
        lambda serialized: tf.size(parse_example(serialized)[OBJECT_CLASS_LABEL]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return int(counts.reduce(tf.constant(0), tf.maximum))


def box_table(source: DataSource):
    """Every box of ``source``'s images (its ``only`` members): normalised ``xyxy`` corners
    (N x 4 float32, of the image's width and height) and class labels (N int64)."""
    import numpy as np

    def element(serialized):
        parsed = parse_example(serialized)
        return _corners(parsed)[0], parsed[OBJECT_CLASS_LABEL], parsed[IMAGE_SOURCE_ID]

    items = record_dataset(source.files).map(element)
    if source.only is not None:
        items = items.filter(_member_of(source.only))
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


def _corners(parsed: dict):
    """The boxes as normalised ``xyxy`` corners (N x 4) and their classes (float, N)."""
    import tensorflow as tf

    keys = [OBJECT_BBOX_XMIN, OBJECT_BBOX_YMIN, OBJECT_BBOX_XMAX, OBJECT_BBOX_YMAX]
    corners = tf.stack([parsed[key] for key in keys], axis=-1)
    return corners, tf.cast(parsed[OBJECT_CLASS_LABEL], tf.float32)


def _mirrored(parsed: dict, image_size: int, copy: str):
    """The plain image and boxes, or both mirrored as ``copy`` says."""
    import tensorflow as tf

    image = preprocess_encoded(parsed[IMAGE_ENCODED], image_size)
    corners, labels = _corners(parsed)
    xmin, ymin, xmax, ymax = tf.unstack(corners, 4, axis=-1)
    if copy == "horizontal":
        image, xmin, xmax = tf.image.flip_left_right(image), 1.0 - xmax, 1.0 - xmin
    elif copy == "vertical":
        image, ymin, ymax = tf.image.flip_up_down(image), 1.0 - ymax, 1.0 - ymin
    elif copy == "transpose":
        image, xmin, ymin, xmax, ymax = tf.image.transpose(image), ymin, xmin, ymax, xmax
    return image, tf.stack([xmin, ymin, xmax, ymax], axis=-1), labels


def window_boxes(corners, labels, window, mirror_x, mirror_y):
    """Normalised boxes seen through ``window`` (left, top, width, height, as shares of the
    image), then mirrored: clipped to the window; a box with less than :data:`CROP_KEEP` of its
    area inside is dropped (class -1, box 0). Kept boxes come first, in their order."""
    import tensorflow as tf

    left, top, width, height = window
    xmin, ymin, xmax, ymax = tf.unstack(corners, 4, axis=-1)
    xmin, xmax = (xmin - left) / width, (xmax - left) / width
    ymin, ymax = (ymin - top) / height, (ymax - top) / height
    full = (xmax - xmin) * (ymax - ymin)
    xmin, ymin = tf.clip_by_value(xmin, 0.0, 1.0), tf.clip_by_value(ymin, 0.0, 1.0)
    xmax, ymax = tf.clip_by_value(xmax, 0.0, 1.0), tf.clip_by_value(ymax, 0.0, 1.0)
    inside = tf.maximum(xmax - xmin, 0.0) * tf.maximum(ymax - ymin, 0.0)
    keep = (inside > 0) & (inside >= CROP_KEEP * full)
    xmin, xmax = tf.where(mirror_x, 1.0 - xmax, xmin), tf.where(mirror_x, 1.0 - xmin, xmax)
    ymin, ymax = tf.where(mirror_y, 1.0 - ymax, ymin), tf.where(mirror_y, 1.0 - ymin, ymax)
    boxes = tf.where(keep[:, None], tf.stack([xmin, ymin, xmax, ymax], axis=-1), 0.0)
    labels = tf.where(keep, labels, -1.0)
    order = tf.argsort(tf.cast(~keep, tf.int32), stable=True)
    return tf.gather(boxes, order), tf.gather(labels, order)


def _cropped(parsed: dict, image_size: int, seed: int):
    """A random window of the image (drawn from ``seed`` and the image's id), enlarged to the
    input by the same resize as every image, mirrored at random; its boxes with it."""
    import tensorflow as tf

    pixels = decode_image_tensor(parsed[IMAGE_ENCODED], math.ceil(image_size / CROP_SIDE[0]))
    image_id = tf.strings.to_hash_bucket_fast(parsed[IMAGE_SOURCE_ID], 2**31 - 1)
    draws = tf.random.stateless_uniform([5], seed=tf.stack([tf.constant(seed, tf.int64), image_id]))
    shape = tf.cast(tf.shape(pixels)[:2], tf.float32)
    side = CROP_SIDE[0] + (CROP_SIDE[1] - CROP_SIDE[0]) * draws[0]
    size = tf.maximum(tf.round(shape * side), 1.0)  # height, width in pixels
    start = tf.floor((shape - size) * draws[1:3])
    first, extent = tf.cast(start, tf.int32), tf.cast(size, tf.int32)
    window = pixels[first[0] : first[0] + extent[0], first[1] : first[1] + extent[1]]
    image = resize_for_model(window, image_size)
    mirror_x, mirror_y = draws[3] < 0.5, draws[4] < 0.5
    image = tf.where(mirror_x, tf.image.flip_left_right(image), image)
    image = tf.where(mirror_y, tf.image.flip_up_down(image), image)
    share = (start[1] / shape[1], start[0] / shape[0], size[1] / shape[1], size[0] / shape[0])
    corners, labels = _corners(parsed)
    return image, *window_boxes(corners, labels, share, mirror_x, mirror_y)


def _randomly_mirrored(parsed: dict, image_size: int, seed: int):
    """The image and boxes as one of the cached copies "none", "horizontal" or "vertical",
    drawn from ``seed`` and the image's id (each a third of the time)."""
    import tensorflow as tf

    image_id = tf.strings.to_hash_bucket_fast(parsed[IMAGE_SOURCE_ID], 2**31 - 1)
    draw = tf.random.stateless_uniform(
        [], seed=tf.stack([tf.constant(seed, tf.int64), image_id]), maxval=3, dtype=tf.int64
    )
    image = preprocess_encoded(parsed[IMAGE_ENCODED], image_size)
    corners, labels = _corners(parsed)
    xmin, ymin, xmax, ymax = tf.unstack(corners, 4, axis=-1)
    mirror_x, mirror_y = tf.equal(draw, 1), tf.equal(draw, 2)
    image = tf.where(mirror_x, tf.image.flip_left_right(image), image)
    image = tf.where(mirror_y, tf.image.flip_up_down(image), image)
    xmin, xmax = tf.where(mirror_x, 1.0 - xmax, xmin), tf.where(mirror_x, 1.0 - xmin, xmax)
    ymin, ymax = tf.where(mirror_y, 1.0 - ymax, ymin), tf.where(mirror_y, 1.0 - ymin, ymax)
    return image, tf.stack([xmin, ymin, xmax, ymax], axis=-1), labels


def create_mirrored_epoch(source: DataSource, image_size: int, batch_size: int, seed: int):
    """One training epoch of ``(images, {"boxes", "labels"})``: the images shuffled by
    ``seed``, each plain or mirrored as the cached copies are (:func:`_randomly_mirrored`),
    whole batches only, so every epoch has the same number of steps."""
    import tensorflow as tf

    if source.kind != "tfrecord":
        raise DataSourceError(source.path, "detection reads TFRecords (convert the dataset)")
    rows = box_rows(source)
    parsed = record_dataset(source.files).map(parse_example)
    if source.only is not None:
        keep = _member_of(source.only)
        parsed = parsed.filter(lambda example: keep(None, None, example[IMAGE_SOURCE_ID]))

    def element(example):
        image, corners, labels = _randomly_mirrored(example, image_size, seed)
        boxes, labels = _padded(corners, labels, image_size, rows)
        return image, {"boxes": boxes, "labels": labels}

    parsed = parsed.shuffle(min(SHUFFLE_BUFFER, max(source.num_examples, 1)), seed=seed)
    dataset = parsed.map(element, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True)


def _padded(corners, labels, size: int, rows: int):
    """Normalised corners -> pixel corners of the input, padded to ``rows`` (class -1)."""
    import tensorflow as tf

    pad = rows - tf.shape(labels)[0]
    boxes = tf.pad(corners * float(size), [[0, pad], [0, 0]])
    labels = tf.pad(labels, [[0, pad]], constant_values=-1.0)
    return tf.ensure_shape(boxes, [rows, 4]), tf.ensure_shape(labels, [rows])


def create_detection_dataset(
    source: DataSource,
    image_size: int,
    batch_size: int = 16,
    copy: str = "none",
    shuffle: bool = False,
    seed: int | None = None,
):
    """Batched ``(images, {"boxes", "labels"}, source_ids)`` of a TFRecord source, as the
    cached copy ``copy`` (a mirroring or a crop copy) shows them."""
    import tensorflow as tf

    if source.kind != "tfrecord":
        raise DataSourceError(source.path, "detection reads TFRecords (convert the dataset)")
    seed_of_crop = crop_seed(copy)
    rows = box_rows(source)
    records = record_dataset(source.files)
    if shuffle:
        records = records.shuffle(4096, seed=seed)

    def element(serialized):
        parsed = parse_example(serialized)
        if seed_of_crop is not None:
            image, corners, labels = _cropped(parsed, image_size, seed_of_crop)
        else:
            image, corners, labels = _mirrored(parsed, image_size, copy)
        boxes, labels = _padded(corners, labels, image_size, rows)
        return image, {"boxes": boxes, "labels": labels}, parsed[IMAGE_SOURCE_ID]

    dataset = records.map(element, num_parallel_calls=tf.data.AUTOTUNE)
    if source.only is not None:
        keep = _member_of(source.only)
        dataset = dataset.filter(lambda image, target, source_id: keep(image, 0, source_id))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
