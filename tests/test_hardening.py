"""Hardening: no single file aborts a run, reads are bounded, values are checked, and no
command deletes or overwrites what the user owns. One test per case of the hardening issue."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defectscope.cli.main import app
from defectscope.core.errors import ConfigError, RunFolderError
from defectscope.data.inspect import inspect_path
from defectscope.data.pipeline import DataSourceError, open_source, read_manifest
from defectscope.data.tfrecord_writer import convert_dataset
from defectscope.data.voc import parse_voc
from defectscope.evaluation.evaluate import evaluate
from defectscope.inference.batch import predict_files
from defectscope.inference.classifier import load_model
from tests.helpers import pngs_pillow_accepts_and_tensorflow_refuses, within

runner = CliRunner()
CORRUPT = pngs_pillow_accepts_and_tensorflow_refuses()


def _plant_corrupt_pngs(folder: Path) -> list[Path]:
    planted = []
    for name, data in CORRUPT.items():
        (folder / f"{name}.png").write_bytes(data)
        planted.append(folder / f"{name}.png")
    return planted


def test_corrupt_pngs_never_reach_the_records(synthetic_copy: Path, tmp_path: Path) -> None:
    _plant_corrupt_pngs(synthetic_copy / "train" / "images" / "patches")
    manifest = convert_dataset(synthetic_copy, tmp_path / "records")
    skipped = {Path(s["path"]).stem: s["reason"] for s in manifest["skipped"]}
    assert set(CORRUPT) <= set(skipped)
    assert all(skipped[n].startswith("corrupt or truncated image") for n in CORRUPT)
    assert manifest["splits"]["train"]["num_records"] == 24  # only the good ones
    report = inspect_path(tmp_path / "records")  # every record reads back
    assert sum(report.counts["train"].values()) == 24
    text = inspect_path(synthetic_copy).format(max_problems_per_kind=10)
    assert "unreadable_image (error): 4" in text
    assert "missing_annotation" not in text  # each file once, with its worst problem


def test_predict_and_evaluate_go_on_past_corrupt_pngs(
    tiny_run: Path, synthetic_copy: Path, tmp_path: Path
) -> None:
    folder = synthetic_copy / "validation" / "images" / "patches"
    _plant_corrupt_pngs(folder)
    rows = load_model(tiny_run).predict(sorted(folder.iterdir()))
    errors = {Path(r.path).stem: r.error for r in rows if not r.ok}
    assert set(errors) == set(CORRUPT) and sum(r.ok for r in rows) == 2
    metrics = evaluate(tiny_run, synthetic_copy, out=tmp_path / "eval")
    assert metrics["num_images"] == 12  # the corrupt files were refused with a warning


def test_files_that_are_not_regular_files_are_reported(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    crazing = synthetic_copy / "train" / "images" / "crazing"
    annotations = synthetic_copy / "train" / "annotations"
    os.mkfifo(crazing / "fifo.jpg")
    (crazing / "loop.jpg").symlink_to(crazing / "loop.jpg")
    (crazing / "a.jpg").symlink_to(crazing / "b.jpg")
    (crazing / "b.jpg").symlink_to(crazing / "a.jpg")
    first_xml = sorted(annotations.glob("crazing_*.xml"))[0]
    first_xml.unlink()
    first_xml.symlink_to("/dev/zero")  # an annotation that would read without end
    secret = tmp_path / "outside.xml"
    shutil.copy(sorted(annotations.glob("crazing_*.xml"))[1], secret)
    second_xml = sorted(annotations.glob("crazing_*.xml"))[1]
    second_xml.unlink()
    second_xml.symlink_to(secret)  # leaves the dataset root
    with open(crazing / "sparse.jpg", "wb") as handle:
        handle.truncate(64 * 1024**3)
    with within(60):
        report = inspect_path(synthetic_copy)
        manifest = convert_dataset(synthetic_copy, tmp_path / "records")
    reasons = {Path(p.path).name: p.message for p in report.problems if p.severity == "error"}
    assert "FIFO" in reasons["fifo.jpg"]
    assert "symlink loop" in reasons["loop.jpg"] and "symlink loop" in reasons["a.jpg"]
    assert "character device" in reasons[first_xml.name]
    assert "leaves the folder" in reasons[second_xml.name]
    assert "more than the limit" in reasons["sparse.jpg"]
    assert manifest["splits"]["train"]["num_records"] == 24


def test_predict_path_lists_and_folder_loops_cannot_hang_or_repeat(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "parts"
    shutil.copytree(synthetic_root / "validation" / "images" / "crazing", folder)
    (folder / "again").symlink_to(folder)  # a directory loop
    os.mkfifo(tmp_path / "fifo.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'fifo.png'}\n{next(folder.glob('*.jpg'))}\n")
    with within(120):
        walked = predict_files(load_model(tiny_run), [folder], out=tmp_path / "walk.csv")
        listed = predict_files(load_model(tiny_run), [], [listing], out=tmp_path / "list.csv")
    with open(tmp_path / "walk.csv") as handle:
        rows = list(csv.DictReader(handle))
    images = [r["path"] for r in rows if not r["error"]]
    assert len(images) == len(set(images)) == 2  # each image once
    assert any("symlink loop" in r["error"] for r in rows)
    assert walked.predicted == 2 and listed.predicted == 1 and listed.rows == 2
    assert "FIFO" in (tmp_path / "list.csv").read_text()


def test_a_list_of_paths_that_never_ends_a_line_is_refused(tiny_run: Path) -> None:
    with within(30), pytest.raises(Exception, match="longer than 4096 characters"):
        predict_files(load_model(tiny_run), [], ["/dev/zero"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309"])
def test_non_finite_boxes_are_refused(value: str) -> None:
    xml = (
        "<annotation><size><width>64</width><height>64</height><depth>3</depth></size>"
        f"<object><name>crazing</name><bndbox><xmin>{value}</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>crazing</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    annotation = parse_voc(xml, "a.xml")
    assert len(annotation.objects) == 1  # the good box stays
    assert "not a finite number" in annotation.warnings[0]
    odd_size = parse_voc(f"<annotation><size><width>{value}</width></size></annotation>", "b")
    assert odd_size.width == 0 and odd_size.warnings  # no crash on a bad <size>


def test_formulas_in_class_names_are_escaped_in_csv_outputs(tmp_path: Path) -> None:
    from defectscope.evaluation.metrics import EvaluationResult
    from defectscope.evaluation.report import write_evaluation
    from defectscope.inference.classifier import Prediction
    from defectscope.inference.writers import write_predictions

    rows = [Prediction("=cmd|'/c calc'!A1.png", "=SUM(1+1)", 0.9, [("=SUM(1+1)", 0.9)])]
    write_predictions(rows, tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["label"] == "'=SUM(1+1)" and row["path"].startswith("'=")
    assert row["top_k"].startswith("'=")
    import numpy as np

    result = EvaluationResult(["+a", "@b"], np.array([0]), np.array([[0.2, 0.8]]), ["-x.png"])
    write_evaluation(result, tmp_path / "eval")
    text = (tmp_path / "eval" / "misclassified.csv").read_text()
    assert "'-x.png,'+a,'@b" in text
    from defectscope.core.spreadsheet import safe_row

    # numbers stay numbers (a box's -0.5); text that only starts like one does not
    assert safe_row(["-0.500000", "+3", "-1e3", "-inf", "-1+1", "-nan", " -1"]) == [
        "-0.500000",
        "+3",
        "-1e3",
        "'-inf",
        "'-1+1",
        "'-nan",
        " -1",
    ]


def test_bad_manifests_give_a_clear_error(synthetic_records: Path, tmp_path: Path) -> None:
    folder = tmp_path / "records"
    shutil.copytree(synthetic_records, folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(DataSourceError, match=r"manifest\.json: not a valid manifest"):
        open_source(folder, "train")
    result = runner.invoke(app, ["inspect", str(folder)])
    assert result.exit_code == 2 and "not a valid manifest" in result.output
    manifest = json.loads((synthetic_records / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["file"] = "../../../etc/passwd"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataSourceError, match="is not a shard file name"):
        read_manifest(folder)


def test_no_command_replaces_the_users_files(
    tiny_run: Path, synthetic_root: Path, synthetic_records: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for args in (
        ["demo", "--out", str(mine), "--per-class", "2", "--epochs", "1"],
        ["export", "--model", str(tiny_run), "--format", "onnx", "--out", str(mine)],
        [
            "evaluate",
            "--model",
            str(tiny_run),
            "--data",
            str(synthetic_records),
            "--out",
            str(mine),
        ],
        ["convert", "--data", str(synthetic_root), "--out", str(mine)],
    ):
        result = runner.invoke(app, [str(arg) for arg in args])
        assert result.exit_code == 2, (args, result.output)
        assert "notes.txt" in result.output and "--overwrite" in result.output
        assert (mine / "notes.txt").read_text() == "keep me"
        assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    inside = runner.invoke(
        app, ["convert", "--data", str(synthetic_root), "--out", str(synthetic_root / "r")]
    )
    assert inside.exit_code == 2 and "lies inside" in inside.output


def test_predict_output_paths_are_checked_before_any_work(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    image = next((synthetic_root / "validation/images/crazing").glob("*.jpg"))
    with pytest.raises(RunFolderError, match="is a folder"):
        predict_files(load_model(tiny_run), [image], out=tmp_path)
    with pytest.raises(ConfigError, match="must end in one of"):
        predict_files(load_model(tiny_run), [image], out=tmp_path / "x.txt")
    summary = predict_files(load_model(tiny_run), [image], out=tmp_path / "new" / "p.csv")
    assert summary.predicted == 1 and (tmp_path / "new" / "p.csv").is_file()
