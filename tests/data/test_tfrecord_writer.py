"""Conversion: manifest, bad files skipped, atomic shards, idempotent reruns."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectscope.data import tfrecord_writer
from defectscope.data.layout import DatasetLayoutError
from defectscope.data.pipeline import DataSourceError, open_source
from defectscope.data.synthetic import add_quirks
from defectscope.data.tfrecord_writer import ConversionError, convert_dataset


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_manifest_counts_shards_and_hashes(synthetic_root: Path, tmp_path: Path) -> None:
    manifest = convert_dataset(synthetic_root, tmp_path / "out", num_shards=3, workers=2)
    assert manifest["classes"][0] == "crazing"
    assert manifest["label_map"]["scratches"] == 5
    train = manifest["splits"]["train"]
    assert train["num_records"] == 24
    assert set(train["class_counts"].values()) == {4}
    assert [s["file"] for s in train["shards"]] == [
        "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord",
    ]
    assert sum(s["num_records"] for s in train["shards"]) == 24
    for shard in train["shards"]:
        data = (tmp_path / "out" / shard["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest


def test_broken_files_are_skipped_and_listed(synthetic_copy: Path, tmp_path: Path) -> None:
    add_quirks(synthetic_copy)
    cmyk = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).convert("CMYK").save(cmyk, "JPEG")
    (synthetic_copy / "train/images/patches/cmyk.jpg").write_bytes(cmyk.getvalue())
    manifest = convert_dataset(synthetic_copy, tmp_path / "out", workers=2)
    skipped = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {".DS_Store", "notes.txt", "truncated.jpg", "empty.png", "orphan.xml"}
    assert skipped["empty.png"] == "empty file"
    assert "truncated" in skipped["truncated.jpg"].lower()
    assert manifest["splits"]["train"]["num_records"] == 25  # 24 good + the CMYK one


def test_rerun_is_byte_identical(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert_dataset(synthetic_root, out, num_shards=2, workers=2)
    first = folder_bytes(out)
    convert_dataset(synthetic_root, out, num_shards=2, workers=1)
    assert folder_bytes(out) == first


def test_changing_the_shard_count_removes_stale_shards(
    synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    convert_dataset(synthetic_root, out, num_shards=4)
    convert_dataset(synthetic_root, out, num_shards=2)
    assert sorted(p.name for p in out.glob("train-*")) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]


def test_interrupted_conversion_is_never_accepted(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    convert_dataset(synthetic_root, out, num_shards=2)
    real_build = tfrecord_writer.build_example
    calls = {"n": 0}

    def dying_build(record):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt("simulated kill")
        return real_build(record)

    monkeypatch.setattr(tfrecord_writer, "build_example", dying_build)
    with pytest.raises(KeyboardInterrupt):
        convert_dataset(synthetic_root, out, num_shards=3)
    with pytest.raises(DataSourceError, match="interrupted"):
        open_source(out, "train")
    assert not list(out.glob("train-*-of-00003.tfrecord"))
    monkeypatch.setattr(tfrecord_writer, "build_example", real_build)
    convert_dataset(synthetic_root, out, num_shards=3)
    assert open_source(out, "train").num_examples == 24
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_leftover_temporaries_are_cleaned(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".train-00000-of-00001.tfrecord.tmp-999").write_bytes(b"half")
    convert_dataset(synthetic_root, out)
    assert not list(out.glob(".*tmp-*"))


def test_no_layout_and_no_images_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError):
        convert_dataset(tmp_path, tmp_path / "out")
    (tmp_path / "data" / "rust").mkdir(parents=True)
    (tmp_path / "data" / "rust" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConversionError, match="no image could be converted"):
        convert_dataset(tmp_path / "data", tmp_path / "out")
