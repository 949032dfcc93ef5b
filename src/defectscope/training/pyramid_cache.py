"""The frozen part of the encoder's outputs of every image, computed once, kept on disk.

Those are P3-P5, or P3 and the input of the first tuned block when the encoder's last blocks
train with the heads (``detect.tune_from_block``). One folder per (images, copy, weights,
input size, outputs): ``P3.npy`` ... as float16 arrays read
by memory mapping (the fit set of NEU-DET at 256 px with two mirrored copies is about 9 GB), the
boxes and labels beside them, and a ``complete`` marker written last, so an interrupted cache is
recomputed, never read half-written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defectscope.core.progress import Progress
from defectscope.data.detection import CROP_KEEP, CROP_SIDE, create_detection_dataset, crop_seed
from defectscope.data.pipeline import DataSource
from defectscope.data.tfdata import without_autotune_thread
from defectscope.models.detector import split_encoder
from defectscope.training.config import TrainConfig
from defectscope.training.features import source_identity, weights_identity
from defectscope.training.run_folder import RunFolder

COMPLETE = "complete"


@dataclass
class PyramidCache:
    folder: Path
    count: int
    levels: tuple[str, ...]  # the cached outputs, e.g. ("P3", "P4", "P5") or ("P3", "C13")
    # the arrays' memory maps, opened once: opening one per row read made gathering a batch
    # about four times slower (its pages mapped again at every read)
    _maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def _array(self, name: str) -> np.ndarray:
        if name not in self._maps:
            self._maps[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._maps[name]

    def features(self, rows: Iterable[int]) -> dict[str, np.ndarray]:
        rows = np.asarray(list(rows))
        return {level: self._array(level)[rows].astype(np.float32) for level in self.levels}

    def boxes(self, rows=None) -> np.ndarray:
        data = self._array("boxes")
        return np.asarray(data if rows is None else data[np.asarray(list(rows))])

    def labels(self, rows=None) -> np.ndarray:
        data = self._array("labels")
        return np.asarray(data if rows is None else data[np.asarray(list(rows))])


def _cache_folder(
    source: DataSource, config: TrainConfig, run: RunFolder, copy: str, levels: list[str]
) -> Path:
    identity = [
        weights_identity(config.weights),
        config.image_size,
        source_identity(source),
        copy,
    ]
    if levels != ["P3", "P4", "P5"]:  # the frozen encoder's caches keep their old keys
        identity.append(levels)
    if crop_seed(copy) is not None:  # a crop copy: its windows depend on how they are drawn
        identity.append([CROP_SIDE, CROP_KEEP])
    identity = json.dumps(identity)
    key = hashlib.sha256(identity.encode()).hexdigest()[:20]
    root = Path(config.feature_cache or run.root.parent / ".feature-cache")
    return root / f"pyramid-{source.split}-{copy}-{key}"


def _write(encoder_levels, source: DataSource, size: int, copy: str, folder: Path) -> int:
    from numpy.lib.format import open_memmap

    count = source.num_examples
    dataset = create_detection_dataset(source, size, batch_size=16, copy=copy)
    arrays: dict[str, np.ndarray] = {}
    row, progress = 0, Progress(f"pyramid features of {source.split} ({copy})", count)
    for images, target, _ in dataset:
        levels = {k: np.asarray(v) for k, v in encoder_levels(images, training=False).items()}
        if not arrays:
            for name, value in levels.items():
                arrays[name] = open_memmap(
                    folder / f"{name}.npy", "w+", np.float16, (count, *value.shape[1:])
                )
            arrays["boxes"] = open_memmap(
                folder / "boxes.npy", "w+", np.float32, (count, *target["boxes"].shape[1:])
            )
            arrays["labels"] = open_memmap(
                folder / "labels.npy", "w+", np.float32, (count, *target["labels"].shape[1:])
            )
        rows = slice(row, row + len(images))
        for name, value in levels.items():
            arrays[name][rows] = value
        arrays["boxes"][rows], arrays["labels"][rows] = target["boxes"], target["labels"]
        row += len(images)
        progress.update(len(images))
    progress.close()
    for array in arrays.values():
        array.flush()
    return row


def cache_pyramids(
    detector, source: DataSource, config: TrainConfig, run: RunFolder, copy: str
) -> PyramidCache:
    """The cache of ``source`` as its augmented copy ``copy`` (a mirroring or a crop copy,
    :mod:`~defectscope.data.detection`): read when complete, else computed."""
    import keras

    encoder = detector.backbone.image_encoder
    outputs, _ = split_encoder(encoder, config.detect.tune_from_block)
    levels = sorted(outputs)
    folder = _cache_folder(source, config, run, copy, levels)
    if (folder / COMPLETE).is_file():
        return PyramidCache(folder, int((folder / COMPLETE).read_text()), tuple(levels))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = _write(keras.Model(encoder.inputs, outputs), source, config.image_size, copy, folder)
    (folder / COMPLETE).write_text(str(count))
    return PyramidCache(folder, count, tuple(levels))


def epoch_steps(caches: list[PyramidCache], batch_size: int) -> int:
    """Batches per epoch: every image once (in one of its cached copies), the rest dropped."""
    return max(1, caches[0].count // batch_size)


def cached_batches(
    caches: list[PyramidCache], batch_size: int, seed_of: Callable[[int], int], first_epoch: int
):
    """Shuffled batches ``(features, {"boxes", "labels"})``, one epoch after another from
    ``first_epoch``: each image once per epoch, in a copy (plain, mirrored, cropped) drawn at
    random, the order and the copies from ``seed_of(epoch)``.

    The batches are gathered by ``tf.numpy_function`` over a counter, not by
    ``Dataset.from_generator``: TensorFlow 2.21's generator op lowers glibc's trim threshold for
    the whole process (its log: "Memory patch applied: M_TRIM_THRESHOLD=128 kb"), after which
    every training step mapped its buffers afresh; on NEU-DET an epoch took about 10% longer
    (4.8 million page faults against 54,000-229,000; docs/detection.md)."""
    import tensorflow as tf

    first = caches[0]
    names = (*first.levels, "boxes", "labels")
    shapes = {name: first._array(name).shape[1:] for name in names}
    steps = epoch_steps(caches, batch_size)
    drawn: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the current epoch's order and copies

    def batch(index) -> list[np.ndarray]:
        epoch, step = first_epoch + int(index) // steps, int(index) % steps
        if epoch not in drawn:
            rng = np.random.default_rng(seed_of(epoch))
            drawn.clear()
            drawn[epoch] = rng.permutation(first.count), rng.integers(0, len(caches), first.count)
        order, copies = drawn[epoch]
        rows = order[step * batch_size : (step + 1) * batch_size]
        return _gather(caches, names, [(int(copies[r]), int(r)) for r in rows])

    def structured(index):
        arrays = tf.numpy_function(batch, [index], [tf.float32] * len(names), stateful=True)
        for array, name in zip(arrays, names, strict=True):
            array.set_shape((None, *shapes[name]))
        found = dict(zip(names, arrays, strict=True))
        features = {name: found[name] for name in first.levels}
        return features, {"boxes": found["boxes"], "labels": found["labels"]}

    return without_autotune_thread(tf.data.Dataset.counter().map(structured).prefetch(2))


def _gather(
    caches: list[PyramidCache], names: tuple[str, ...], chosen: list[tuple[int, int]]
) -> list[np.ndarray]:
    """The arrays ``names`` of the ``chosen`` (cache index, row) pairs, as float32 batches in
    that order: each cache's rows read at once, straight into the batch."""
    chosen_array = np.asarray(chosen, dtype=np.int64).reshape(-1, 2)
    batches = []
    for name in names:
        batch = np.empty((len(chosen_array), *caches[0]._array(name).shape[1:]), np.float32)
        for index, cache in enumerate(caches):
            where = np.flatnonzero(chosen_array[:, 0] == index)
            if where.size:
                batch[where] = cache._array(name)[chosen_array[where, 1]]
        batches.append(batch)
    return batches
