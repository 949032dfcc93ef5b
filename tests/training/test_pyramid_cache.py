"""The detector's cached-feature batches: every image once per epoch, in a copy drawn by seed,
the same batches again for a resumed epoch, and no generator op in the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.lib.format import open_memmap

from defectscope.training.pyramid_cache import PyramidCache, cached_batches, epoch_steps

COUNT, BATCH = 10, 4
LEVELS = ("P3", "P4")


def _cache(folder: Path, copy: int) -> PyramidCache:
    """A cache whose every value says which copy and row it came from (``copy * 100 + row``)."""
    folder.mkdir()
    shapes = {"P3": (4, 4, 2), "P4": (2, 2, 3), "boxes": (3, 4), "labels": (3,)}
    for name, shape in shapes.items():
        dtype = np.float16 if name in LEVELS else np.float32
        array = open_memmap(folder / f"{name}.npy", "w+", dtype, (COUNT, *shape))
        for row in range(COUNT):
            array[row] = copy * 100 + row
        array.flush()
    return PyramidCache(folder, COUNT, LEVELS)


@pytest.fixture
def caches(tmp_path: Path) -> list[PyramidCache]:
    return [_cache(tmp_path / f"copy{copy}", copy) for copy in range(2)]


def _epochs(dataset, steps: int, epochs: int) -> list[list[tuple[int, int]]]:
    """(copy, row) of every image of the first ``epochs`` epochs, checked alike in all arrays."""
    seen: list[list[tuple[int, int]]] = []
    for index, (features, target) in enumerate(dataset.take(steps * epochs)):
        if index % steps == 0:
            seen.append([])
        codes = features["P3"].numpy()[:, 0, 0, 0]
        for array in (*features.values(), *target.values()):
            assert array.dtype.name == "float32"
            flat = array.numpy().reshape(len(codes), -1)
            assert (flat == codes[:, None]).all()
        seen[-1].extend((int(code) // 100, int(code) % 100) for code in codes)
    return seen


def test_each_image_comes_once_per_epoch_in_a_copy_drawn_by_seed(caches) -> None:
    steps = epoch_steps(caches, BATCH)
    assert steps == COUNT // BATCH  # the rest of an epoch is dropped
    epochs = _epochs(cached_batches(caches, BATCH, lambda epoch: 7 + epoch, 0), steps, 3)
    for seen in epochs:
        rows = [row for _, row in seen]
        assert len(rows) == steps * BATCH and len(set(rows)) == len(rows)
    assert epochs[0] != epochs[1]  # another order, other copies, every epoch
    copies = {copy for seen in epochs for copy, _ in seen}
    assert copies == {0, 1}
    again = _epochs(cached_batches(caches, BATCH, lambda epoch: 7 + epoch, 0), steps, 3)
    assert again == epochs


def test_a_resumed_epoch_gets_the_batches_it_had_before(caches) -> None:
    steps = epoch_steps(caches, BATCH)
    whole = _epochs(cached_batches(caches, BATCH, lambda epoch: epoch, 0), steps, 3)
    resumed = _epochs(cached_batches(caches, BATCH, lambda epoch: epoch, 1), steps, 2)
    assert resumed == whole[1:]


def test_the_batches_come_without_a_generator_op(caches) -> None:
    """TensorFlow's generator op lowers glibc's trim threshold for the whole process, which
    made every later training step page-fault its buffers afresh (about 10% slower epochs)."""
    dataset = cached_batches(caches, BATCH, lambda epoch: epoch, 0)
    graph = dataset._as_serialized_graph().numpy()  # the pipeline's ops, as TensorFlow runs them
    assert b"MapDataset" in graph
    assert b"GeneratorDataset" not in graph


def test_the_batches_run_without_tf_datas_autotuning_thread(caches: list[PyramidCache]) -> None:
    dataset = cached_batches(caches, BATCH, lambda epoch: epoch, 0)
    assert dataset.options().autotune.enabled is False  # its wake-up delayed an iterator's end
