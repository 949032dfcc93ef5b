"""``inspect`` on dataset roots and TFRecord folders, and the sample grid."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from defectscope.data.inspect import inspect_path, render_grid
from defectscope.data.synthetic import add_quirks
from defectscope.data.tfrecord_writer import convert_dataset


def test_dataset_and_tfrecords_report_the_same_counts(synthetic_root: Path, tmp_path: Path) -> None:
    convert_dataset(synthetic_root, tmp_path / "out")
    from_folder = inspect_path(synthetic_root)
    from_records = inspect_path(tmp_path / "out")
    assert from_folder.counts == from_records.counts
    assert from_folder.counts["train"]["crazing"] == 4
    assert from_folder.num_boxes == from_records.num_boxes > 36
    assert from_folder.image_sizes == {(64, 64): 36}


def test_problems_are_listed_and_formatted(synthetic_copy: Path) -> None:
    add_quirks(synthetic_copy)
    report = inspect_path(synthetic_copy)
    kinds = {p.kind for p in report.problems}
    assert {"hidden_file", "not_an_image", "unreadable_image", "orphan_annotation"} <= kinds
    text = report.format()
    assert "unreadable_image (error): 2" in text
    assert "truncated.jpg" in text


def test_corrupted_shard_is_reported(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert_dataset(synthetic_root, out, num_shards=2)
    shard = out / "validation-00000-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    report = inspect_path(out)
    assert [p.kind for p in report.problems] == ["corrupt_shard"]
    assert sum(report.counts["validation"].values()) == 6  # the other shard still read


def test_grid_has_a_row_per_class(synthetic_root: Path, tmp_path: Path) -> None:
    report = inspect_path(synthetic_root, samples_per_class=3)
    assert all(len(v) == 3 for v in report.samples.values())
    path = render_grid(report, tmp_path / "grid.png", tile=50)
    with Image.open(path) as grid:
        assert grid.size == (150 + 3 * 50, 6 * 50)
        assert grid.getextrema() != ((255, 255),) * 3  # something was drawn
