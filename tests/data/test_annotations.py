"""YOLO and COCO exports read into the same records as VOC, with the same checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from defectscope.data.discovery import LAYOUT_COCO, LAYOUT_YOLO, discover_dataset
from defectscope.data.records import load_record
from defectscope.data.voc import read_voc


def _voc_boxes(root: Path) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """Image stem -> its VOC boxes (pixels) of the synthetic dataset."""
    boxes = {}
    for split in ("train", "validation"):
        for xml in (root / split / "annotations").glob("*.xml"):
            annotation = read_voc(xml)
            boxes[xml.stem] = [(o.name, o.xmin, o.ymin, o.xmax, o.ymax) for o in annotation.objects]
    return boxes


def _images(root: Path):
    for split, target in (("train", "train"), ("validation", "valid")):
        for image in sorted((root / split / "images").rglob("*.jpg")):
            yield target, image


def make_yolo(root: Path, out: Path, names: list[str], size: int = 64) -> dict:
    boxes = _voc_boxes(root)
    (out / "data.yaml").parent.mkdir(parents=True)
    (out / "data.yaml").write_text(f"names: {json.dumps(names)}\nnc: {len(names)}\n")
    for split, image in _images(root):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, out / split / "images" / image.name)
        lines = [
            f"{names.index(n)} {(x0 + x1) / 2 / size} {(y0 + y1) / 2 / size} "
            f"{(x1 - x0) / size} {(y1 - y0) / size}"
            for n, x0, y0, x1, y1 in boxes[image.stem]
        ]
        (out / split / "labels" / f"{image.stem}.txt").write_text("\n".join(lines) + "\n")
    return boxes


def make_coco(root: Path, out: Path, names: list[str], size: int = 64) -> dict:
    boxes = _voc_boxes(root)
    documents: dict[str, dict] = {}
    for split, image in _images(root):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / image.name)
        document = documents.setdefault(
            split,
            {
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
                "images": [],
                "annotations": [],
            },
        )
        image_id = len(document["images"]) + 1
        document["images"].append(
            {"id": image_id, "file_name": image.name, "width": size, "height": size}
        )
        for n, x0, y0, x1, y1 in boxes[image.stem]:
            document["annotations"].append(
                {
                    "id": len(document["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": names.index(n) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
    for split, document in documents.items():
        (out / split / "_annotations.coco.json").write_text(json.dumps(document))
    return boxes


def _records_match(index, boxes: dict) -> None:
    label_map = index.label_map()
    count = 0
    for samples in index.samples.values():
        for sample in samples:
            record, problems = load_record(sample, label_map)
            expected = boxes[sample.image_path.stem]
            got = [
                (b.class_text, b.xmin * 64, b.ymin * 64, b.xmax * 64, b.ymax * 64)
                for b in record.boxes
            ]
            assert len(got) == len(expected)
            for (n1, *a), (n2, *b) in zip(sorted(got), sorted(expected), strict=True):
                assert n1 == n2 and a == pytest.approx(b, abs=1e-3)
            assert [p.kind for p in problems if p.kind != "box_clipped"] == []
            count += 1
    assert count == 36


@pytest.mark.parametrize(("maker", "layout"), [(make_yolo, LAYOUT_YOLO), (make_coco, LAYOUT_COCO)])
def test_exports_give_the_voc_boxes(synthetic_root: Path, tmp_path: Path, maker, layout) -> None:
    names = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    boxes = maker(synthetic_root, tmp_path / "export", names)
    index = discover_dataset(tmp_path / "export")
    assert index.layout == layout and index.classes == names
    assert sorted(index.samples) == ["train", "validation"]  # "valid" is the validation split
    _records_match(index, boxes)


def test_bad_yolo_and_coco_values_are_dropped_with_a_note(tmp_path: Path) -> None:
    from defectscope.data.annotations import read_coco, read_yolo

    label = tmp_path / "a.txt"
    label.write_text("0 0.5 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n0 0.5 0.5\n")
    annotation = read_yolo(label, ["dent"])
    assert len(annotation.objects) == 1 and len(annotation.warnings) == 3
    assert (
        "not finite" in annotation.warnings[0]
        and "not one of the 1 names" in annotation.warnings[1]
    )
    coco = tmp_path / "c.json"
    coco.write_text(
        json.dumps(
            {
                "categories": [{"id": 1, "name": "dent"}],
                "images": [{"id": 1, "file_name": "x.jpg", "width": 10, "height": 10}],
                "annotations": [
                    {"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3]},
                    {"image_id": 1, "category_id": 1, "bbox": [1, "inf", 3, 3]},
                    {"image_id": 1, "category_id": 9, "bbox": [1, 1, 3, 3]},
                ],
            }
        )
    )
    names, by_file = read_coco(coco)
    assert names == ["dent"] and len(by_file["x.jpg"].objects) == 1
    assert len(by_file["x.jpg"].warnings) == 2
