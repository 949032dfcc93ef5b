"""The command line, in-process (typer's runner) and once as an installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defectscope import __version__
from defectscope.cli.main import app
from defectscope.data.synthetic import add_quirks

runner = CliRunner()


def test_convert_with_broken_files_warns_and_exits_zero(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    add_quirks(synthetic_copy)
    out = tmp_path / "records"
    result = runner.invoke(app, ["convert", "--data", str(synthetic_copy), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "train: 24 images" in result.output
    assert "skipped" in result.output and "truncated.jpg" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["skipped"]) == 5


def test_convert_without_a_layout_fails_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no dataset layout recognised" in result.output


def test_inspect_writes_grid_and_json(synthetic_root: Path, tmp_path: Path) -> None:
    grid, report = tmp_path / "grid.png", tmp_path / "report.json"
    args = ["inspect", str(synthetic_root), "--grid", str(grid), "--json", str(report)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "crazing" in result.output and "total" in result.output
    assert grid.stat().st_size > 1000
    assert json.loads(report.read_text())["counts"]["validation"]["scratches"] == 2


def test_inspect_of_an_interrupted_conversion_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"")
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert "interrupted" in result.output


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    args = ["demo", "--out", str(demo), "--per-class", "4", "--epochs", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (demo / "tfrecords" / "manifest.json").is_file()
    assert (demo / "samples.png").is_file()
    assert "unreadable_image (error): 2" in result.output
    assert (demo / "run" / "evaluation" / "confusion_matrix.png").is_file()
    lines = (demo / "predictions.csv").read_text().splitlines()
    assert len(lines) == 1 + 12 + 1  # header, 2 validation images per class, the truncated file
    assert "truncated" in lines[-1].lower()


def test_console_script_is_installed() -> None:
    executable = Path(sys.executable).parent / "defectscope"
    assert executable.is_file(), f"no console script beside {sys.executable}"
    completed = subprocess.run([executable, "version"], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == __version__


def test_evaluate_writes_the_report(
    tiny_run: Path, synthetic_records: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--model",
        str(tiny_run),
        "--data",
        str(synthetic_records),
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 12
    assert f"accuracy {metrics['accuracy']:.4f}" in result.output
    assert {"accuracy", "macro_f1", "classes", "confusion_matrix", "per_class"} <= set(metrics)


def test_evaluate_refuses_other_classes(tiny_run: Path, tmp_path: Path) -> None:
    from defectscope.data.synthetic import synthesize_dataset

    other = synthesize_dataset(
        tmp_path / "two", 2, 1, image_size=64, classes=("crazing", "patches")
    )
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_run), "--data", str(other)])
    assert result.exit_code == 2
    assert "differ from the model's" in result.output


def test_predict_mixes_good_and_bad_sources(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "predictions.csv"
    folder = synthetic_root / "validation" / "images" / "crazing"
    args = [
        "predict",
        str(folder),
        str(broken),
        "missing.png",
        "--model",
        str(tiny_run),
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 of 3 images predicted" in result.output  # missing.png is no image: a warning
    assert "warning: missing.png: no such file or folder" in result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    assert any(line.startswith(str(broken)) and "not a readable image" in line for line in lines)


def test_predict_with_nothing_predictable_fails(tiny_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    result = runner.invoke(app, ["predict", str(bad), "--model", str(tiny_run)])
    assert result.exit_code == 1
    assert "no image could be predicted" in result.output


def test_predict_streams_a_path_list_in_shards_to_parquet(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    images = sorted(str(p) for p in (synthetic_root / "validation").rglob("*.jpg"))
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join([*images, str(tmp_path / "gone.jpg")]) + "\n")
    parts = []
    for index in range(2):
        out = tmp_path / f"part{index}.parquet"
        args = ["predict", "--model", str(tiny_run), "--paths-from", str(listing)]
        result = runner.invoke(app, [*args, "--shard", f"{index}/2", "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        parts.append(pq.read_table(out).to_pylist())
    rows = parts[0] + parts[1]
    assert sorted(r["path"] for r in rows) == sorted([*images, str(tmp_path / "gone.jpg")])
    assert parts[0] and parts[1]
    (gone,) = [r for r in rows if r["error"]]
    assert "cannot read" in gone["error"] and gone["confidence"] is None


def test_predict_reads_paths_from_stdin(tiny_run: Path, synthetic_root: Path) -> None:
    images = sorted(str(p) for p in (synthetic_root / "validation").rglob("*.jpg"))[:3]
    args = ["predict", "--model", str(tiny_run), "--paths-from", "-"]
    result = runner.invoke(app, args, input="# from find\n" + "\n".join(images) + "\n")
    assert result.exit_code == 0, result.output
    assert "3 of 3 images predicted" in result.output


def test_predict_resume_continues_a_partial_file(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    folder = str(synthetic_root / "validation" / "images")
    whole, resumed = tmp_path / "whole.csv", tmp_path / "resumed.csv"
    args = ["predict", folder, "--model", str(tiny_run), "--quiet"]
    assert runner.invoke(app, [*args, "--out", str(whole)]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(resumed.with_suffix(".jsonl"))]).exit_code == 0
    scored = resumed.with_suffix(".jsonl").read_text().splitlines()
    partial = tmp_path / "resumed.csv.partial"  # as a run killed after 5 rows leaves it
    partial.write_text("\n".join(scored[:5]) + "\n" + scored[5][:20])
    result = runner.invoke(app, [*args, "--out", str(resumed), "--resume"])
    assert result.exit_code == 0, result.output
    assert "12 of 12 images predicted" in result.output
    assert resumed.read_bytes() == whole.read_bytes() and not partial.exists()
    result = runner.invoke(app, [*args, "--out", str(resumed), "--resume"])
    assert "already complete" in result.output


def test_predict_resume_refuses_changed_inputs(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    (tmp_path / "p.csv.partial").write_text('{"path": "/elsewhere/a.jpg", "error": ""}\n')
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (80, 80), "grey").save(image)
    result = runner.invoke(
        app, ["predict", str(image), "--model", str(tiny_run), "--out", str(out), "--resume"]
    )
    assert result.exit_code == 2
    assert "inputs changed" in result.output and "/elsewhere/a.jpg" in result.output


def test_train_needs_data_and_refuses_unknown_weights(
    tmp_path: Path, synthetic_records: Path
) -> None:
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--data is required" in result.output
    args = [
        "train",
        "--data",
        str(synthetic_records),
        "--out",
        str(tmp_path / "r2"),
        "--weights",
        "w.h5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "weights file not found: 'w.h5'" in result.output
