"""The one tf.data input pipeline used by training, evaluation and prediction.

A source is either a TFRecord folder written by ``defectscope convert`` (recognised by its
``manifest.json``) or a dataset root as :mod:`defectscope.data.layout` understands it. Both give
the same elements: ``(image, label)`` or ``(image, label, source_id)``, where ``image`` is a
float32 ``(size, size, 3)`` tensor in [0, 255]. Pixel scaling for the backbone belongs to the
model, not to this pipeline.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from defectscope.core.errors import ConfigError, FileError
from defectscope.core.files import check_regular_file, read_regular_file
from defectscope.data.augment import AugmentConfig, augment_image
from defectscope.data.discovery import discover_dataset
from defectscope.data.images import (
    DEFAULT_MAX_PIXELS,
    decode_image_tensor,
    decode_pixels,
    read_pixels,
)
from defectscope.data.layout import Problem
from defectscope.data.records import iter_records
from defectscope.data.tfdata import without_autotune_thread
from defectscope.data.tfrecord_features import (
    IMAGE_CLASS_LABEL,
    IMAGE_ENCODED,
    IMAGE_SOURCE_ID,
    parse_example,
)
from defectscope.data.tfrecord_writer import MANIFEST_NAME

log = logging.getLogger(__name__)
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # the manifest lists every problem of a dataset


class DataSourceError(FileError):
    """A data source that cannot be read (missing split, incomplete conversion...)."""


@dataclass(frozen=True)
class DataSource:
    """One split of a dataset: where its images are, its classes and size."""

    path: Path
    kind: str  # "tfrecord" or "folder"
    split: str
    classes: tuple[str, ...]
    num_examples: int
    files: tuple[str, ...]  # shard files, or image files (folder source)
    labels: tuple[int, ...] = ()  # folder source only
    source_ids: tuple[str, ...] = ()  # folder source only
    problems: tuple[Problem, ...] = ()
    only: frozenset[str] | None = None  # TFRecords: read just these source ids (a subset)


def is_tfrecord_folder(path: str | Path) -> bool:
    """A folder written by ``convert``: a manifest, or shards left by an interrupted run."""
    path = Path(path)
    return (path / MANIFEST_NAME).is_file() or any(path.glob("*.tfrecord"))


def read_manifest(folder: str | Path) -> dict:
    """Load a conversion manifest; a folder without one is an incomplete conversion."""
    manifest_path = Path(folder) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DataSourceError(
            folder,
            f"no {MANIFEST_NAME}; the conversion is missing or was interrupted. "
            "Run `defectscope convert` again.",
        )
    try:
        manifest = json.loads(read_regular_file(manifest_path, MAX_MANIFEST_BYTES))
    except ValueError as err:
        raise DataSourceError(manifest_path, f"not a valid manifest ({err})") from None
    _check_manifest(manifest, manifest_path)
    return manifest


def _is_shard_name(name) -> bool:
    """A plain file name in the records folder: no folder part, not hidden, a .tfrecord."""
    return (
        isinstance(name, str)
        and name == PurePosixPath(name).name == Path(name).name
        and not name.startswith(".")
        and name.endswith(".tfrecord")
        and "\x00" not in name
    )


def _check_manifest(manifest, path: Path) -> None:
    """The structure every reader relies on; shard files must be plain names in the folder."""
    try:
        classes, splits = manifest["classes"], manifest["splits"]
        ok = isinstance(classes, list) and all(isinstance(c, str) for c in classes)
        for split, info in splits.items():
            ok = ok and isinstance(split, str) and isinstance(info["num_records"], int)
            for shard in info["shards"]:
                name = shard["file"]
                if not _is_shard_name(name):
                    raise DataSourceError(path, f"shard {name!r} is not a shard file name")
                ok = ok and isinstance(shard["num_bytes"], int) and isinstance(shard["sha256"], str)
    except (KeyError, TypeError, AttributeError) as err:
        raise DataSourceError(path, f"not a valid manifest (missing or bad {err})") from None
    if not ok:
        raise DataSourceError(path, "not a valid manifest (classes, splits or shards malformed)")


def _tfrecord_source(folder: Path, split: str) -> DataSource:
    manifest = read_manifest(folder)
    if split not in manifest["splits"]:
        raise DataSourceError(
            folder, f"no split {split!r}; the manifest has {sorted(manifest['splits'])}"
        )
    info = manifest["splits"][split]
    files = []
    for shard in info["shards"]:
        shard_path = folder / shard["file"]
        size = check_regular_file(shard_path, shard["num_bytes"], root=folder)
        if size != shard["num_bytes"]:
            raise DataSourceError(shard_path, "not the size the manifest records")
        files.append(str(shard_path))
    return DataSource(
        folder, "tfrecord", split, tuple(manifest["classes"]), info["num_records"], tuple(files)
    )


def _folder_source(root: Path, split: str, val_fraction: float, workers: int) -> DataSource:
    index = discover_dataset(root, val_fraction=val_fraction)
    if split not in index.samples:
        raise DataSourceError(root, f"no split {split!r}; found {index.splits}")
    label_map = index.label_map()
    kept, problems = [], list(index.problems)
    loaded = iter_records(index.samples[split], label_map, workers, root=index.root)
    for sample, record, sample_problems in loaded:
        problems.extend(sample_problems)
        if record is not None:
            kept.append(sample)
    for problem in problems:
        if problem.severity == "error":
            log.warning("skipped %s: %s", problem.path, problem.message)
    return DataSource(
        path=index.root,
        kind="folder",
        split=split,
        classes=tuple(index.classes),
        num_examples=len(kept),
        files=tuple(str(s.image_path) for s in kept),
        labels=tuple(label_map[s.class_name] for s in kept),
        source_ids=tuple(s.source_id for s in kept),
        problems=tuple(problems),
    )


def check_source(path: str | Path, splits: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The classes of a TFRecord folder or dataset root that holds ``splits``; reads only the
    manifest or the folder listing (no image), so a wrong path fails in a moment."""
    path = Path(path)
    if is_tfrecord_folder(path):
        manifest = read_manifest(path)
        found, classes = sorted(manifest["splits"]), tuple(manifest["classes"])
    else:
        index = discover_dataset(path)
        found, classes = index.splits, tuple(index.classes)
    missing = [s for s in splits if s not in found]
    if missing:
        raise DataSourceError(path, f"no split {missing[0]!r}; found {found}")
    return classes


def open_source(
    path: str | Path, split: str = "train", val_fraction: float = 0.2, workers: int = 2
) -> DataSource:
    """Open one split of a TFRecord folder or dataset root (folder images are validated once)."""
    path = Path(path)
    if is_tfrecord_folder(path):
        return _tfrecord_source(path, split)
    return _folder_source(path, split, val_fraction, workers)


@dataclass(frozen=True)
class InputShard:
    """The part of a split one worker reads: ``file`` (whole shard files, when there are at
    least as many as workers) or ``data`` (every ``count``-th record)."""

    count: int = 1
    index: int = 0

    def level(self, source: DataSource) -> str:
        if self.count <= 1:
            return "none"
        whole_files = source.kind == "tfrecord" and source.only is None
        return "file" if whole_files and len(source.files) >= self.count else "data"

    def num_examples(self, source: DataSource) -> int:
        """Records this worker reads."""
        level = self.level(source)
        if level == "none":
            return source.num_examples
        if level == "data":
            return len(range(self.index, source.num_examples, self.count))
        shards = read_manifest(source.path)["splits"][source.split]["shards"]
        return sum(s["num_records"] for s in shards[self.index :: self.count])


def _tfrecord_items(source: DataSource, shuffle: bool, seed: int | None, shard: InputShard):
    """Elements ``(encoded bytes, label, source_id)`` of TFRecord shards."""
    import tensorflow as tf

    level = shard.level(source)
    files = tf.data.Dataset.from_tensor_slices(list(source.files))
    if level == "file":
        files = files.shard(shard.count, shard.index)
    if shuffle:
        files = files.shuffle(len(source.files), seed=seed)
    records = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(source.files), 4),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )

    def from_example(serialized):
        parsed = parse_example(serialized)
        label = tf.cast(parsed[IMAGE_CLASS_LABEL], tf.int32)
        return parsed[IMAGE_ENCODED], label, parsed[IMAGE_SOURCE_ID]

    items = records.map(from_example, num_parallel_calls=tf.data.AUTOTUNE)
    if source.only is not None:  # a subset (the selection split, say): filter, then shard
        items = items.filter(_member_of(source.only))
    return items.shard(shard.count, shard.index) if level == "data" else items


def _member_of(ids: frozenset[str]):
    """A tf.data predicate: the element's source id is one of ``ids``."""
    import tensorflow as tf

    keys = tf.constant(sorted(ids) or [""], tf.string)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int32)), default_value=0
    )
    return lambda encoded, label, source_id: tf.equal(table.lookup(source_id), 1)


def _file_pixels(image_size: int):
    """A py_function body: a file path -> its pixels, decoded as :func:`decode_pixels` does."""

    def read(path):
        return read_pixels(path.numpy().decode("utf-8", "surrogateescape"), image_size)

    return read


def _items(source: DataSource, shuffle: bool, seed: int | None, shard: InputShard):
    """Elements ``(encoded bytes or file path, label, source_id)`` in the source's order."""
    import tensorflow as tf

    if source.kind == "tfrecord":
        return _tfrecord_items(source, shuffle, seed, shard)
    slices = (list(source.files), list(source.labels), list(source.source_ids))
    items = tf.data.Dataset.from_tensor_slices(slices)
    if shard.level(source) == "data":
        items = items.shard(shard.count, shard.index)
    return items


RESIZE_MODES = ("stretch", "letterbox")


def check_resize(resize: str) -> str:
    if resize not in RESIZE_MODES:
        raise ConfigError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    return resize


def resize_for_model(pixels, image_size: int, resize: str = "stretch"):
    """uint8 pixels -> float32 ``(image_size, image_size, 3)`` in [0, 255], antialiased:
    ``stretch`` to the square, or ``letterbox`` (keep the aspect ratio, pad with black)."""
    import tensorflow as tf

    image = tf.cast(pixels, tf.float32)
    if check_resize(resize) == "letterbox":
        image = tf.image.resize_with_pad(image, image_size, image_size, antialias=True)
    else:
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def preprocess_encoded(encoded, image_size: int, resize: str = "stretch"):
    """Canonical bytes -> float32 ``(image_size, image_size, 3)`` in [0, 255]. Shared by all."""
    return resize_for_model(decode_image_tensor(encoded, image_size), image_size, resize)


def _decoder(source: DataSource, image_size: int, resize: str):
    """The map from items to ``(image, label, source_id)``: in the graph for TFRecords, through
    a py_function that reads, validates and decodes each file for folders."""
    import tensorflow as tf

    if source.kind == "tfrecord":
        return lambda encoded, label, source_id: (
            preprocess_encoded(encoded, image_size, resize),
            label,
            source_id,
        )
    read = _file_pixels(image_size)

    def from_file(path, label, source_id):
        pixels = tf.py_function(read, [path], tf.uint8)
        pixels.set_shape([None, None, 3])
        return resize_for_model(pixels, image_size, resize), label, source_id

    return from_file


def prepare_image_bytes(
    data: bytes,
    image_size: int,
    name: str = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    resize: str = "stretch",
) -> np.ndarray:
    """Encoded image bytes -> the float32 ``(size, size, 3)`` array the model sees.

    The same validation and decode as a TFRecord or a folder; a large JPEG is checked and
    decoded at a reduced scale. Raises ``ImageDecodeError``.
    """
    pixels = decode_pixels(data, name, image_size, max_pixels)
    return resize_for_model(pixels, image_size, resize).numpy()


def create_dataset(
    source: DataSource | str | Path,
    split: str = "train",
    image_size: int = 200,
    batch_size: int = 32,
    training: bool = False,
    augment: AugmentConfig | None = None,
    seed: int | None = None,
    with_ids: bool = False,
    shuffle_buffer: int = 2048,
    shard: InputShard = InputShard(),
    resize: str = "stretch",
):
    """Batched ``(images, labels[, source_ids])`` for one split.

    ``training`` shuffles (seeded) and applies ``augment`` (default :class:`AugmentConfig`);
    evaluation order is the source's own. Pass ``augment=AugmentConfig(flip=False, ...)`` to
    tune it, or ``training=False`` for clean images. ``shard`` reads one worker's part only.
    """
    import tensorflow as tf

    if image_size < 32:
        raise ConfigError(f"image_size must be >= 32, got {image_size!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    if not isinstance(source, DataSource):
        source = open_source(source, split)
    if source.num_examples == 0:
        raise DataSourceError(source.path, f"split {source.split!r} holds no usable image")
    autotune = tf.data.AUTOTUNE
    num_examples = shard.num_examples(source)
    dataset = _items(source, shuffle=training, seed=seed, shard=shard)
    if training:
        dataset = dataset.shuffle(min(shuffle_buffer, max(num_examples, 1)), seed=seed)
    dataset = dataset.map(_decoder(source, image_size, resize), num_parallel_calls=autotune)
    if training:
        config = augment or AugmentConfig()
        noise_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def augmented(element, pair_seed):
            image, label, source_id = element
            return augment_image(image, pair_seed, config), label, source_id

        dataset = tf.data.Dataset.zip((dataset, noise_seeds)).map(
            augmented, num_parallel_calls=autotune
        )
    if not with_ids:
        dataset = dataset.map(lambda image, label, _: (image, label))
    batches = -(-num_examples // batch_size)
    dataset = dataset.batch(batch_size).apply(tf.data.experimental.assert_cardinality(batches))
    return without_autotune_thread(dataset.prefetch(autotune))
