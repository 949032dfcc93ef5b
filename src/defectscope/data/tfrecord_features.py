"""TFRecord feature keys (TF Object Detection API names) and the pure record <-> Example code.

This module is the only place that knows the keys: the sharded writer calls
:func:`build_example`, every reader calls :func:`parse_example`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SCHEMA_VERSION = 1

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"
IMAGE_KEY_SHA256 = "image/key/sha256"
IMAGE_CLASS_LABEL = "image/class/label"
IMAGE_CLASS_TEXT = "image/class/text"
OBJECT_BBOX_XMIN = "image/object/bbox/xmin"
OBJECT_BBOX_YMIN = "image/object/bbox/ymin"
OBJECT_BBOX_XMAX = "image/object/bbox/xmax"
OBJECT_BBOX_YMAX = "image/object/bbox/ymax"
OBJECT_CLASS_TEXT = "image/object/class/text"
OBJECT_CLASS_LABEL = "image/object/class/label"
OBJECT_DIFFICULT = "image/object/difficult"
OBJECT_TRUNCATED = "image/object/truncated"


@dataclass(frozen=True)
class BoxRecord:
    """One object box, corners normalised to [0, 1]."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    class_text: str
    class_label: int  # index in the class list, -1 when the name is not a known class
    difficult: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class ImageRecord:
    """Everything one TFRecord example holds."""

    encoded: bytes
    format: str
    height: int
    width: int
    filename: str
    source_id: str
    class_label: int
    class_text: str
    boxes: tuple[BoxRecord, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.encoded).hexdigest()


def build_example(record: ImageRecord):
    """Pure conversion of one :class:`ImageRecord` to a ``tf.train.Example``."""
    import tensorflow as tf

    def _bytes(values: list[bytes]) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def _ints(values: list[int]) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def _floats(values: list[float]) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    boxes = record.boxes
    feature = {
        IMAGE_ENCODED: _bytes([record.encoded]),
        IMAGE_FORMAT: _bytes([record.format.encode()]),
        IMAGE_HEIGHT: _ints([record.height]),
        IMAGE_WIDTH: _ints([record.width]),
        IMAGE_FILENAME: _bytes([record.filename.encode()]),
        IMAGE_SOURCE_ID: _bytes([record.source_id.encode()]),
        IMAGE_KEY_SHA256: _bytes([record.sha256.encode()]),
        IMAGE_CLASS_LABEL: _ints([record.class_label]),
        IMAGE_CLASS_TEXT: _bytes([record.class_text.encode()]),
        OBJECT_BBOX_XMIN: _floats([b.xmin for b in boxes]),
        OBJECT_BBOX_YMIN: _floats([b.ymin for b in boxes]),
        OBJECT_BBOX_XMAX: _floats([b.xmax for b in boxes]),
        OBJECT_BBOX_YMAX: _floats([b.ymax for b in boxes]),
        OBJECT_CLASS_TEXT: _bytes([b.class_text.encode() for b in boxes]),
        OBJECT_CLASS_LABEL: _ints([b.class_label for b in boxes]),
        OBJECT_DIFFICULT: _ints([int(b.difficult) for b in boxes]),
        OBJECT_TRUNCATED: _ints([int(b.truncated) for b in boxes]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def feature_spec() -> dict:
    """The ``tf.io.parse_single_example`` spec for every key."""
    import tensorflow as tf

    scalar_str = tf.io.FixedLenFeature([], tf.string)
    scalar_int = tf.io.FixedLenFeature([], tf.int64)
    return {
        IMAGE_ENCODED: scalar_str,
        IMAGE_FORMAT: scalar_str,
        IMAGE_HEIGHT: scalar_int,
        IMAGE_WIDTH: scalar_int,
        IMAGE_FILENAME: scalar_str,
        IMAGE_SOURCE_ID: scalar_str,
        IMAGE_KEY_SHA256: scalar_str,
        IMAGE_CLASS_LABEL: scalar_int,
        IMAGE_CLASS_TEXT: scalar_str,
        OBJECT_BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
        OBJECT_BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
        OBJECT_BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
        OBJECT_BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
        OBJECT_CLASS_TEXT: tf.io.VarLenFeature(tf.string),
        OBJECT_CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
        OBJECT_DIFFICULT: tf.io.VarLenFeature(tf.int64),
        OBJECT_TRUNCATED: tf.io.VarLenFeature(tf.int64),
    }


def parse_example(serialized):
    """Parse one serialized example to a dict of dense tensors keyed as above."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    return {
        key: tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value
        for key, value in parsed.items()
    }


def example_to_record(serialized: bytes) -> ImageRecord:
    """Eager inverse of :func:`build_example`, for inspection and tests."""
    parsed = {key: value.numpy() for key, value in parse_example(serialized).items()}
    boxes = tuple(
        BoxRecord(
            xmin=float(parsed[OBJECT_BBOX_XMIN][i]),
            ymin=float(parsed[OBJECT_BBOX_YMIN][i]),
            xmax=float(parsed[OBJECT_BBOX_XMAX][i]),
            ymax=float(parsed[OBJECT_BBOX_YMAX][i]),
            class_text=parsed[OBJECT_CLASS_TEXT][i].decode(),
            class_label=int(parsed[OBJECT_CLASS_LABEL][i]),
            difficult=bool(parsed[OBJECT_DIFFICULT][i]),
            truncated=bool(parsed[OBJECT_TRUNCATED][i]),
        )
        for i in range(len(parsed[OBJECT_BBOX_XMIN]))
    )
    return ImageRecord(
        encoded=parsed[IMAGE_ENCODED],
        format=parsed[IMAGE_FORMAT].decode(),
        height=int(parsed[IMAGE_HEIGHT]),
        width=int(parsed[IMAGE_WIDTH]),
        filename=parsed[IMAGE_FILENAME].decode(),
        source_id=parsed[IMAGE_SOURCE_ID].decode(),
        class_label=int(parsed[IMAGE_CLASS_LABEL]),
        class_text=parsed[IMAGE_CLASS_TEXT].decode(),
        boxes=boxes,
    )
