"""Dataset discovery: both layouts, stem pairing, and every file-level quirk reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from defectscope.data.discovery import discover_dataset
from defectscope.data.layout import (
    LAYOUT_CLASS_FOLDERS,
    LAYOUT_KAGGLE,
    DatasetLayoutError,
)
from defectscope.data.neu import NEU_CLASSES


def kinds(index) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in index.problems:
        found.setdefault(problem.kind, []).append(Path(problem.path).name)
    return found


def test_kaggle_layout_is_found_with_sorted_classes(synthetic_root: Path) -> None:
    index = discover_dataset(synthetic_root)
    assert index.layout == LAYOUT_KAGGLE
    assert index.classes == sorted(NEU_CLASSES)
    assert index.label_map()["crazing"] == 0
    assert {s: len(v) for s, v in index.samples.items()} == {"train": 24, "validation": 12}
    assert all(s.annotation_path is not None for s in index.samples["train"])
    assert index.problems == []


def test_annotation_pairs_by_stem_even_when_filename_disagrees(synthetic_copy: Path) -> None:
    xml = synthetic_copy / "train" / "annotations" / "patches_train_1.xml"
    xml.write_text(xml.read_text().replace("patches_train_1.jpg", "somethingelse"))
    index = discover_dataset(synthetic_copy)
    sample = next(s for s in index.samples["train"] if s.image_path.stem == "patches_train_1")
    assert sample.annotation_path == xml.resolve()


def test_file_quirks_are_reported(synthetic_copy: Path) -> None:
    images = synthetic_copy / "train" / "images"
    (images / "crazing" / ".DS_Store").write_bytes(b"\0")
    (images / "crazing" / "readme.txt").write_text("x")
    (images / "stray.jpg").write_bytes(b"x")
    (synthetic_copy / "train" / "annotations" / "crazing_train_2.xml").unlink()
    (synthetic_copy / "train" / "annotations" / "ghost.xml").write_text("<annotation/>")
    (synthetic_copy / "train" / "annotations" / "notes.md").write_text("x")
    index = discover_dataset(synthetic_copy)
    found = kinds(index)
    assert found["hidden_file"] == [".DS_Store"]
    assert found["not_an_image"] == ["readme.txt"]
    assert found["stray_file"] == ["stray.jpg"]
    assert found["missing_annotation"] == ["crazing_train_2.jpg"]
    assert found["orphan_annotation"] == ["ghost.xml"]
    assert found["not_an_annotation"] == ["notes.md"]
    # the image without XML is still used for classification
    stems = [s.image_path.stem for s in index.samples["train"]]
    assert "crazing_train_2" in stems
    assert len(stems) == 24


def test_symlink_leaving_the_root_is_refused(synthetic_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    shutil.copy(next((synthetic_copy / "train/images/crazing").glob("*.jpg")), outside)
    (synthetic_copy / "train/images/crazing/link.jpg").symlink_to(outside)
    index = discover_dataset(synthetic_copy)
    assert kinds(index)["outside_root"] == ["link.jpg"]
    assert all(s.image_path.name != "link.jpg" for s in index.samples["train"])


def test_same_stem_in_two_classes_is_ambiguous(synthetic_copy: Path) -> None:
    images = synthetic_copy / "train" / "images"
    shutil.copy(
        images / "crazing" / "crazing_train_1.jpg", images / "patches" / "crazing_train_1.jpg"
    )
    index = discover_dataset(synthetic_copy)
    assert "ambiguous_stem" in kinds(index)
    paired = [s for s in index.samples["train"] if s.image_path.stem == "crazing_train_1"]
    assert len(paired) == 2 and all(s.annotation_path is None for s in paired)


def test_class_folders_get_a_stratified_split(synthetic_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for class_name in ("dent", "rust"):
        shutil.copytree(synthetic_root / "train" / "images" / "crazing", root / class_name)
    (root / "scratch").mkdir()  # a class of one image: trained on, never validated, reported
    shutil.copy(next((root / "dent").glob("*.jpg")), root / "scratch" / "only.jpg")
    index = discover_dataset(root, val_fraction=0.5)
    assert index.layout == LAYOUT_CLASS_FOLDERS
    assert index.classes == ["dent", "rust", "scratch"]
    per_split = {
        split: sorted(s.class_name for s in samples) for split, samples in index.samples.items()
    }
    assert per_split["validation"] == ["dent", "dent", "rust", "rust"]  # half of each class
    assert per_split["train"].count("scratch") == 1
    assert all(s.annotation_path is None for v in index.samples.values() for s in v)
    assert [p.kind for p in index.problems] == ["small_class"]
    again = discover_dataset(root, val_fraction=0.5)
    assert again.samples == index.samples


def test_wrapping_folder_is_descended(synthetic_root: Path, tmp_path: Path) -> None:
    shutil.copytree(synthetic_root, tmp_path / "archive" / "NEU-DET")
    index = discover_dataset(tmp_path / "archive")
    assert index.layout == LAYOUT_KAGGLE
    assert index.root.name == "NEU-DET"


def test_no_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetLayoutError, match="no dataset layout recognised"):
        discover_dataset(tmp_path)
    with pytest.raises(DatasetLayoutError, match="no such directory"):
        discover_dataset(tmp_path / "absent")
