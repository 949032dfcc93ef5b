"""The synthetic NEU-like dataset is seeded, complete and has boxes inside the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defectscope.data.neu import NEU_CLASSES
from defectscope.data.synthetic import draw_sample, synthesize_dataset
from defectscope.data.voc import read_voc


def test_same_seed_same_images(tmp_path: Path) -> None:
    a = synthesize_dataset(tmp_path / "a", 1, 1, image_size=48, seed=3)
    b = synthesize_dataset(tmp_path / "b", 1, 1, image_size=48, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 6 * 2 * 2
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


@pytest.mark.parametrize("class_name", NEU_CLASSES)
def test_every_class_draws_boxes_inside_the_image(class_name: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, boxes = draw_sample(class_name, rng, size=100)
        assert image.size == (100, 100) and boxes
        for xmin, ymin, xmax, ymax in boxes:
            assert 0 <= xmin < xmax <= 100 and 0 <= ymin < ymax <= 100


def test_annotations_parse(tmp_path: Path) -> None:
    root = synthesize_dataset(tmp_path, 1, 0, image_size=64)
    for xml in (root / "train" / "annotations").glob("*.xml"):
        annotation = read_voc(xml)
        assert annotation.objects and annotation.objects[0].name in NEU_CLASSES


def test_unknown_class_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown synthetic class 'rust'"):
        draw_sample("rust", np.random.default_rng(0))
