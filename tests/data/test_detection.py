"""Images with their boxes for the detector: every augmented copy moves image and boxes together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectscope.core.errors import ConfigError
from defectscope.data.detection import (
    CROP_KEEP,
    CROP_SIDE,
    FLIPS,
    MIN_BOX_ROWS,
    box_rows,
    create_detection_dataset,
    create_mirrored_epoch,
    crop_copy,
    records_for,
    window_boxes,
)
from defectscope.data.pipeline import open_source
from defectscope.data.synthetic import voc_xml
from tests.helpers import dense_voc_dataset

SIZE = 64
BOX = (8, 4, 40, 20)  # xmin, ymin, xmax, ymax of a bright, wide rectangle on black


def _one_box_dataset(root: Path) -> Path:
    """A 128 x 96 image (not square: the input stretches it) with one bright box."""
    width, height = 128, 96
    pixels = np.zeros((height, width, 3), np.uint8)
    scale_x, scale_y = width / SIZE, height / SIZE
    xmin, ymin, xmax, ymax = (
        round(BOX[0] * scale_x),
        round(BOX[1] * scale_y),
        round(BOX[2] * scale_x),
        round(BOX[3] * scale_y),
    )
    pixels[ymin:ymax, xmin:xmax] = 255
    for split in ("train", "validation"):
        (root / split / "images" / "dent").mkdir(parents=True)
        (root / split / "annotations").mkdir(parents=True)
        Image.fromarray(pixels).save(root / split / "images" / "dent" / "a.png")
        xml = voc_xml("a.png", width, height, [("dent", (xmin, ymin, xmax, ymax))])
        (root / split / "annotations" / "a.xml").write_text(xml)
    return root


@pytest.fixture(scope="module")
def one_box_records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _one_box_dataset(tmp_path_factory.mktemp("one-box"))
    return records_for(root, root.parent / "one-box-records")


def _first(records: Path, copy: str):
    """The image, its first box's pixel corners and its classes, as the copy ``copy``."""
    source = open_source(records, "train")
    images, target, _ = next(iter(create_detection_dataset(source, SIZE, copy=copy)))
    boxes, labels = target["boxes"][0].numpy(), target["labels"][0].numpy()
    assert boxes.shape == (MIN_BOX_ROWS, 4) and labels.shape == (MIN_BOX_ROWS,)
    return images[0].numpy(), np.round(boxes[0]).astype(int), labels


def _box_frames_the_bright_pixels(image: np.ndarray, box) -> bool:
    xmin, ymin, xmax, ymax = box
    brightness = image.mean(axis=-1)
    inside = brightness[ymin + 2 : ymax - 2, xmin + 2 : xmax - 2]
    outside = brightness.copy()
    outside[max(ymin - 2, 0) : ymax + 2, max(xmin - 2, 0) : xmax + 2] = np.nan
    return inside.size > 0 and inside.min() > 200 and np.nanmax(outside) < 50


@pytest.mark.parametrize("copy", FLIPS)
def test_each_copy_moves_the_image_and_its_box_together(one_box_records: Path, copy: str) -> None:
    image, box, labels = _first(one_box_records, copy)
    assert list(labels[:2]) == [0, -1]
    expected = {
        "none": BOX,
        "horizontal": (SIZE - BOX[2], BOX[1], SIZE - BOX[0], BOX[3]),
        "vertical": (BOX[0], SIZE - BOX[3], BOX[2], SIZE - BOX[1]),
        "transpose": (BOX[1], BOX[0], BOX[3], BOX[2]),
    }[copy]
    assert tuple(box) == expected
    assert _box_frames_the_bright_pixels(image, box), copy


def test_crop_copies_enlarge_a_random_window_and_move_its_box_with_it(
    one_box_records: Path,
) -> None:
    """Each crop copy is its own window (seeded by the copy and the image), the same whenever
    it is computed; the kept box frames the bright rectangle, wherever the window put it."""
    seen = set()
    for index in range(8):
        image, box, labels = _first(one_box_records, crop_copy(index))
        again, same_box, _ = _first(one_box_records, crop_copy(index))
        assert np.array_equal(image, again) and np.array_equal(box, same_box)
        assert list(labels[1:3]) == [-1, -1]
        if labels[0] == 0:
            assert _box_frames_the_bright_pixels(image, box), (index, box)
            if min(box[:2]) > 0 and max(box[2:]) < SIZE:  # not cut by the window's edge
                # the window's side is 0.6-1 of the image's: the box grows by 1 to 1/0.6
                for got, was in (
                    (box[2] - box[0], BOX[2] - BOX[0]),
                    (box[3] - box[1], BOX[3] - BOX[1]),
                ):
                    assert was - 2 <= got <= was / CROP_SIDE[0] + 2, (index, box)
        seen.add(tuple(box))
    assert len(seen) >= 6  # windows differ between copies


def test_a_box_mostly_outside_the_window_is_dropped_and_the_kept_ones_come_first() -> None:
    corners = np.array(
        [[0.0, 0.0, 0.5, 0.2], [0.4, 0.4, 0.6, 0.6], [0.2, 0.2, 0.3, 0.4], [0.1, 0.1, 0.3, 0.3]],
        np.float32,
    )
    labels = np.array([3.0, 1.0, 2.0, 0.0], np.float32)
    window = (0.25, 0.25, 0.5, 0.5)  # the middle of the image, enlarged twice
    boxes, kept = window_boxes(corners, labels, window, False, False)
    # inside the window: none of the first box, all of the second, 3/8 of the third (kept,
    # clipped), 1/16 of the fourth (dropped)
    assert 1 / 16 < CROP_KEEP <= 3 / 8
    np.testing.assert_allclose(
        boxes.numpy()[:2], [[0.3, 0.3, 0.7, 0.7], [0.0, 0.0, 0.1, 0.3]], atol=1e-6
    )
    assert list(kept.numpy()) == [1.0, 2.0, -1.0, -1.0] and not boxes.numpy()[2:].any()
    mirrored, _ = window_boxes(corners, labels, window, True, True)
    np.testing.assert_allclose(mirrored.numpy()[1], [0.9, 0.7, 1.0, 1.0], atol=1e-6)


def test_an_unknown_copy_is_refused_with_its_name(one_box_records: Path) -> None:
    source = open_source(one_box_records, "train")
    for bad in ("rotate", "crop-", "crop-x", "crop-1-2"):
        with pytest.raises(ConfigError, match=repr(bad)):
            create_detection_dataset(source, SIZE, copy=bad)


def test_no_box_of_a_densely_annotated_image_is_dropped(tmp_path: Path) -> None:
    """An image with more boxes than MIN_BOX_ROWS widens every image's rows to its count."""
    many = MIN_BOX_ROWS + 36
    records = records_for(dense_voc_dataset(tmp_path / "dense", many), tmp_path / "records")
    source = open_source(records, "validation")
    assert box_rows(source) == many
    _, target, _ = next(iter(create_detection_dataset(source, 96, batch_size=2)))
    real = (target["labels"].numpy() >= 0).sum(axis=1)
    assert target["boxes"].shape == (2, many, 4)
    assert sorted(real.tolist()) == [1, many]


def test_a_mirrored_epoch_shows_each_image_once_as_one_of_the_cached_copies(
    synthetic_records: Path,
) -> None:
    """The whole detector's epochs: every image once per epoch (whole batches), plain or
    mirrored exactly as the cached copy of that name, drawn per image and epoch by seed."""
    source = open_source(synthetic_records, "train")
    copies = {}
    for copy in ("none", "horizontal", "vertical"):
        for images, target, ids in create_detection_dataset(source, SIZE, 256, copy=copy):
            for image, boxes, labels, image_id in zip(
                images.numpy(),
                target["boxes"].numpy(),
                target["labels"].numpy(),
                ids.numpy(),
                strict=True,
            ):
                copies[image.tobytes()] = (image_id, copy, boxes, labels)
    count = source.num_examples
    drawn, orders = set(), []
    for seed in (0, 1, 2):
        seen = []
        for images, target in create_mirrored_epoch(source, SIZE, 4, seed):
            for image, boxes, labels in zip(
                images.numpy(), target["boxes"].numpy(), target["labels"].numpy(), strict=True
            ):
                image_id, copy, copy_boxes, copy_labels = copies[image.tobytes()]
                np.testing.assert_array_equal(boxes, copy_boxes)
                np.testing.assert_array_equal(labels, copy_labels)
                seen.append(image_id)
                drawn.add(copy)
        assert len(seen) == count - count % 4 and len(set(seen)) == len(seen)
        orders.append(seen)
    assert orders[0] != orders[1] and drawn == {"none", "horizontal", "vertical"}
    again = create_mirrored_epoch(source, SIZE, 4, 1)
    ids = [copies[image.tobytes()][0] for images, _ in again for image in images.numpy()]
    assert ids == orders[1]  # the same seed, the same epoch
