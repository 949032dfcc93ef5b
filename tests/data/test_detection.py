"""Images with their boxes for the detector: every augmented copy moves image and boxes together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectscope.core.errors import ConfigError
from defectscope.data.detection import (
    FLIPS,
    MIN_BOX_ROWS,
    box_rows,
    create_detection_dataset,
    records_for,
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


@pytest.mark.parametrize("flip", FLIPS)
def test_each_copy_moves_the_image_and_its_box_together(one_box_records: Path, flip: str) -> None:
    source = open_source(one_box_records, "train")
    images, target, _ = next(iter(create_detection_dataset(source, SIZE, flip=flip)))
    image, boxes, labels = images[0].numpy(), target["boxes"][0].numpy(), target["labels"][0]
    assert boxes.shape == (MIN_BOX_ROWS, 4) and list(labels.numpy()[:2]) == [0, -1]
    xmin, ymin, xmax, ymax = np.round(boxes[0]).astype(int)
    expected = {
        "none": BOX,
        "horizontal": (SIZE - BOX[2], BOX[1], SIZE - BOX[0], BOX[3]),
        "vertical": (BOX[0], SIZE - BOX[3], BOX[2], SIZE - BOX[1]),
        "transpose": (BOX[1], BOX[0], BOX[3], BOX[2]),
    }[flip]
    assert (xmin, ymin, xmax, ymax) == expected
    brightness = image.mean(axis=-1)
    inside = brightness[ymin + 2 : ymax - 2, xmin + 2 : xmax - 2]
    outside = brightness.copy()
    outside[max(ymin - 2, 0) : ymax + 2, max(xmin - 2, 0) : xmax + 2] = np.nan
    assert inside.min() > 200 and np.nanmax(outside) < 50, flip


def test_an_unknown_copy_is_refused_with_its_name(one_box_records: Path) -> None:
    source = open_source(one_box_records, "train")
    with pytest.raises(ConfigError, match="'rotate'"):
        create_detection_dataset(source, SIZE, flip="rotate")


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
