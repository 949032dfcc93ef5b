"""The tf.data pipeline: TFRecords and folders give the same images; augmentation behaves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defectscope.data.augment import AugmentConfig, augment_image, gaussian_blur
from defectscope.data.pipeline import DataSourceError, create_dataset, open_source
from defectscope.data.tfrecord_writer import convert_dataset


@pytest.fixture(scope="module")
def tfrecords(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tfrecords")
    convert_dataset(synthetic_root, out, num_shards=3)
    return out


def images_by_id(dataset) -> dict[str, np.ndarray]:
    found = {}
    for images, labels, ids in dataset:
        for image, label, source_id in zip(
            images.numpy(), labels.numpy(), ids.numpy(), strict=True
        ):
            found[source_id.decode()] = (image, int(label))
    return found


@pytest.mark.parametrize("split", ["train", "validation"])
def test_tfrecords_and_folders_give_identical_elements(
    synthetic_root: Path, tfrecords: Path, split: str
) -> None:
    from_records = images_by_id(create_dataset(tfrecords, split, image_size=48, with_ids=True))
    from_folder = images_by_id(create_dataset(synthetic_root, split, image_size=48, with_ids=True))
    assert sorted(from_records) == sorted(from_folder)
    assert len(from_records) == (24 if split == "train" else 12)
    for source_id, (image, label) in from_records.items():
        np.testing.assert_array_equal(image, from_folder[source_id][0])
        assert label == from_folder[source_id][1]


def test_batches_have_the_model_input_shape_and_raw_pixel_range(tfrecords: Path) -> None:
    images, labels = next(iter(create_dataset(tfrecords, "train", image_size=40, batch_size=5)))
    assert images.shape == (5, 40, 40, 3)
    assert images.dtype.name == "float32"
    assert labels.dtype.name == "int32"
    assert float(images.numpy().min()) >= 0.0 and float(images.numpy().max()) <= 255.0
    assert float(images.numpy().max()) > 1.0  # not scaled: scaling belongs to the model


def test_training_order_and_augmentation_repeat_with_a_seed(tfrecords: Path) -> None:
    def first_batch(seed: int) -> np.ndarray:
        dataset = create_dataset(tfrecords, "train", image_size=32, training=True, seed=seed)
        return next(iter(dataset))[0].numpy()

    np.testing.assert_array_equal(first_batch(7), first_batch(7))
    assert not np.array_equal(first_batch(7), first_batch(8))


def test_augmentation_preserves_range_and_can_be_switched_off() -> None:
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    off = AugmentConfig(
        flip=False, rotate90=False, brightness=0, contrast=0, noise_prob=0, blur_prob=0
    )
    np.testing.assert_array_equal(augment_image(image, [1, 2], off).numpy(), image)
    strong = AugmentConfig(brightness=0.5, contrast=0.5, noise_prob=1.0, blur_prob=1.0)
    out = augment_image(image, [3, 4], strong).numpy()
    assert out.shape == image.shape
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert not np.allclose(out, image)


def test_gaussian_blur_keeps_a_flat_image_flat() -> None:
    flat = np.full((16, 16, 3), 100.0, np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, 2.0).numpy(), flat, rtol=1e-5)


def test_invalid_augment_values_repeat_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"augment\.noise_prob must be <= 1, got 2"):
        AugmentConfig(noise_prob=2)


def test_missing_split_and_bad_arguments_are_clear(tfrecords: Path) -> None:
    with pytest.raises(DataSourceError, match="no split 'test'"):
        open_source(tfrecords, "test")
    with pytest.raises(ValueError, match="image_size must be >= 32, got 8"):
        create_dataset(tfrecords, "train", image_size=8)


def test_folder_source_skips_a_corrupt_image(synthetic_copy: Path) -> None:
    (synthetic_copy / "train/images/crazing/broken.jpg").write_bytes(b"\xff\xd8garbage")
    source = open_source(synthetic_copy, "train")
    assert source.num_examples == 24
    assert any(p.kind == "unreadable_image" for p in source.problems)
    total = sum(int(images.shape[0]) for images, _ in create_dataset(source, image_size=32))
    assert total == 24
