"""A detector through the library and the CLI: rows per box, pictures, the API, bad files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from defectscope.cli.main import app
from defectscope.core.errors import ConfigError
from defectscope.evaluation.evaluate_detector import evaluate_detector
from defectscope.inference.batch import predict_files
from defectscope.inference.detector import Detector, load_detector
from defectscope.inference.model_files import ModelLoadError, locate_model
from defectscope.inference.writers import BOX_COLUMNS

runner = CliRunner()


def _wide_image(folder: Path) -> Path:
    """A 150 x 100 image: boxes must come back in its pixels, not the model's 96 px square."""
    path = folder / "wide.png"
    Image.new("RGB", (150, 100), (120, 120, 120)).save(path)
    return path


def test_the_api_gives_boxes_in_pixels_of_the_original(tiny_detector_run, tmp_path) -> None:
    detector = load_detector(tiny_detector_run)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    found = list(detector.detect([_wide_image(tmp_path), bad], confidence=0.0))
    assert (found[0].width, found[0].height) == (150, 100) and found[0].ok
    assert found[0].boxes, "the decoder of the tiny run keeps boxes of any confidence"
    for box in found[0].boxes:
        assert box.label in detector.classes and 0.0 <= box.confidence <= 1.0
        assert 0 <= box.xmin < box.xmax <= 150 and 0 <= box.ymin < box.ymax <= 100
    assert sum(found[0].counts().values()) == len(found[0].boxes)
    assert not found[1].ok and found[1].boxes == []
    as_dict = found[0].to_dict()
    assert set(as_dict) >= {"path", "boxes", "counts", "error"}


def test_a_classifier_is_not_a_detector(tiny_run) -> None:
    with pytest.raises(ModelLoadError, match="not a detector"):
        load_detector(tiny_run)


def test_predict_writes_one_row_per_box(tiny_detector_run, tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    _wide_image(images)
    (images / "broken.png").write_bytes(b"\x89PNG broken")
    out, drawn = tmp_path / "boxes.csv", tmp_path / "drawn"
    result = runner.invoke(
        app,
        [
            "predict",
            str(images),
            "--model",
            str(tiny_detector_run),
            "--out",
            str(out),
            "--conf",
            "0",
            "--draw",
            str(drawn),
        ],
    )
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == BOX_COLUMNS
    broken = [r for r in rows if r["path"].endswith("broken.png")]
    assert len(broken) == 1 and broken[0]["error"] and broken[0]["label"] == ""
    boxes = [r for r in rows if r["path"].endswith("wide.png")]
    assert len(boxes) > 1 and all(r["label"] and float(r["xmax"]) > float(r["xmin"]) for r in boxes)
    picture = Image.open(drawn / "wide_boxes.png")
    assert picture.size == (150, 100)
    assert "1 picture with boxes" in result.output
    assert "boxes at least 0.00 confident" in result.output  # --conf 0


def test_an_image_without_a_box_above_conf_gets_one_empty_row(tiny_detector_run, tmp_path):
    out = tmp_path / "none.jsonl"
    summary = predict_files(tiny_detector_run, [_wide_image(tmp_path)], out=out, confidence=1.0)
    assert summary.predicted == 1
    row = json.loads(out.read_text())
    assert row["boxes"] == [] and row["error"] == ""
    csv_out = tmp_path / "none.csv"
    predict_files(tiny_detector_run, [_wide_image(tmp_path)], out=csv_out, confidence=1.0)
    rows = list(csv.DictReader(io.StringIO(csv_out.read_text())))
    assert len(rows) == 1 and rows[0]["label"] == "" and rows[0]["error"] == ""


def test_evaluate_on_a_detector_writes_coco_metrics(tiny_detector_run, synthetic_root, tmp_path):
    out = tmp_path / "evaluation"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_detector_run),
            "--data",
            str(synthetic_root),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "detect" and metrics["num_images"] == 12
    assert {"map50", "map50_95", "per_class_ap50", "classes"} <= set(metrics)
    assert (out / "pr_curves.png").is_file() and (out / "predictions.png").is_file()
    shown = json.loads((tiny_detector_run / "weights" / "metadata.json").read_text())
    assert metrics["box_confidence"] == shown["box_confidence"]
    assert "(chosen on selection F1)" in (out / "report.md").read_text()


def test_the_nms_threshold_chosen_in_training_can_be_replaced(tiny_detector_run, tmp_path):
    """The saved threshold by default; a lower one keeps fewer of the untrained detector's
    overlapping boxes, through the API and ``predict --iou``; bad values are refused."""
    metadata = json.loads((tiny_detector_run / "weights" / "metadata.json").read_text())
    assert load_detector(tiny_detector_run).nms_iou == metadata["detector"]["nms_iou"]
    image, counts = _wide_image(tmp_path), {}
    for iou in (0.05, 0.95):
        detector = load_detector(tiny_detector_run, nms_iou=iou)
        assert detector.nms_iou == iou
        counts[iou] = len(next(detector.detect([image], confidence=0.0)).boxes)
    assert 0 < counts[0.05] < counts[0.95]
    out = tmp_path / "boxes.csv"
    command = ["predict", str(image), "--model", str(tiny_detector_run), "--conf", "0"]
    result = runner.invoke(app, [*command, "--iou", "0.05", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == counts[0.05]
    result = runner.invoke(app, [*command, "--iou", "1.5"])
    assert result.exit_code != 0 and "got 1.5" in result.output
    with pytest.raises(ConfigError, match="load_detector"):
        predict_files(load_detector(tiny_detector_run), [image], nms_iou=0.3)


def test_an_option_for_the_other_kind_of_model_is_refused(tiny_run, tiny_detector_run, tmp_path):
    """``--draw``/``--iou`` with a classifier and ``--explain`` with a detector stop before any
    folder is made, naming the flag, instead of being ignored."""
    image = _wide_image(tmp_path)
    cases = [
        (tiny_run, ["--draw", str(tmp_path / "drawn")], "--draw"),
        (tiny_run, ["--iou", "0.4"], "--iou"),
        (tiny_detector_run, ["--explain", str(tmp_path / "heat")], "--explain"),
    ]
    for model, option, flag in cases:
        result = runner.invoke(app, ["predict", str(image), "--model", str(model), *option])
        assert result.exit_code != 0 and flag in result.output, result.output
    assert not (tmp_path / "drawn").exists() and not (tmp_path / "heat").exists()
    with pytest.raises(ConfigError, match="needs a detector; this model is a classifier"):
        predict_files(tiny_run, [image], nms_iou=0.4)
    drawn = predict_files(tiny_detector_run, [image], draw_dir=tmp_path / "drawn", confidence=0)
    assert drawn.drawings == 1


def test_boxes_are_shown_from_the_confidence_chosen_in_training(tiny_detector_run, tmp_path):
    """Without a confidence, the API, ``predict`` and the service keep the boxes at least as
    confident as the one chosen on the selection set (saved in the metadata); a detector saved
    without one uses 0.25."""
    metadata = json.loads((tiny_detector_run / "weights" / "metadata.json").read_text())
    assert load_detector(tiny_detector_run).box_confidence == metadata["box_confidence"]
    location = locate_model(tiny_detector_run)
    older = {k: v for k, v in metadata.items() if k != "box_confidence"}
    assert Detector(location, older).box_confidence == 0.25
    for bad in ("high", 1.5, float("nan"), True, None):  # a hand-edited metadata.json
        with pytest.raises(ModelLoadError, match=f"box_confidence .* got {bad!r}"):
            Detector(location, {**metadata, "box_confidence": bad})
    image = _wide_image(tmp_path)
    every = next(load_detector(tiny_detector_run).detect([image], confidence=0.0)).boxes
    scores = sorted(box.confidence for box in every)
    middle = scores[len(scores) // 2]
    assert scores[0] < middle, "the tiny detector's boxes differ in confidence"
    detector = Detector(location, {**metadata, "box_confidence": middle})
    shown = next(detector.detect([image])).boxes
    assert len(shown) == sum(score >= middle for score in scores) < len(scores)
    assert len(next(detector.detect([image], confidence=0.0)).boxes) == len(scores)
    out = tmp_path / "default.csv"
    result = runner.invoke(
        app, ["predict", str(image), "--model", str(tiny_detector_run), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    kept = sum(score >= metadata["box_confidence"] for score in scores)
    assert f"boxes at least {metadata['box_confidence']:.2f} confident" in result.output
    assert len(rows) == max(kept, 1) and sum(bool(r["label"]) for r in rows) == kept


def test_test_time_flips_through_the_api_and_the_cli(
    tiny_run, tiny_detector_run, synthetic_root, tmp_path
):
    """``tta``: training measured the flips on the selection set and chose their own box
    confidence; the API, ``predict --tta`` and ``evaluate --tta`` use them; a classifier
    refuses ``--tta`` before writing anything."""
    metadata = json.loads((tiny_detector_run / "weights" / "metadata.json").read_text())
    measured = metadata["tta"]
    assert measured["flips"] == ["horizontal", "vertical"]
    assert 0 <= measured["box_confidence"] <= 1 and "selection_map50" in measured
    assert set(measured["box_confidence_selection_f1"]) == set(
        metadata["box_confidence_selection_f1"]
    )
    detector = load_detector(tiny_detector_run, tta=True)
    assert detector.tta and not load_detector(tiny_detector_run).tta
    assert detector.box_confidence == measured["box_confidence"]
    assert detector.metadata["test_time_flips"] is True
    location = locate_model(tiny_detector_run)
    older = {k: v for k, v in metadata.items() if k != "tta"}  # trained before the flips
    assert Detector(location, older, tta=True).box_confidence == metadata["box_confidence"]
    image = sorted(synthetic_root.rglob("*.jpg"))[0]
    found = next(detector.detect([image], confidence=0.0))
    plain = next(load_detector(tiny_detector_run).detect([image], confidence=0.0))
    assert found.ok and found.boxes
    assert [b.confidence for b in found.boxes] != [b.confidence for b in plain.boxes]
    for box in found.boxes:
        assert 0 <= box.xmin < box.xmax <= found.width and 0 <= box.ymin < box.ymax <= found.height
    out = tmp_path / "boxes.csv"
    model = ["--model", str(tiny_detector_run)]
    result = runner.invoke(
        app, ["predict", str(image), *model, "--conf", "0", "--tta", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == len(found.boxes)
    evaluation = tmp_path / "evaluation"
    command = ["evaluate", *model, "--data", str(synthetic_root), "--tta", "--out", str(evaluation)]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["test_time_flips"] is True
    assert metrics["box_confidence"] == measured["box_confidence"]
    assert metrics["box_confidence_selection_f1"] == measured["box_confidence_selection_f1"]
    report = (evaluation / "report.md").read_text()
    assert "test-time flips (image, horizontal and vertical mirror averaged): on" in report
    assert f"selection mAP@0.5 with them {measured['selection_map50']:.4f}" in report
    before = evaluate_detector(  # a detector trained before the flips were measured
        Detector(location, older, tta=True), synthetic_root, out=tmp_path / "older"
    )
    assert before["test_time_flips"] and before["box_confidence"] == metadata["box_confidence"]
    assert "chosen without them" in (tmp_path / "older" / "report.md").read_text()
    refused = [
        ["predict", str(image), "--out", str(tmp_path / "refused.csv")],
        ["evaluate", "--data", str(synthetic_root), "--out", str(tmp_path / "refused")],
    ]
    for command in refused:
        result = runner.invoke(app, [*command, "--model", str(tiny_run), "--tta"])
        assert result.exit_code != 0 and "--tta" in result.output, result.output
        assert "needs a detector" in result.output
    assert not list(tmp_path.glob("refused*"))
    with pytest.raises(ConfigError, match="tta=True"):
        predict_files(load_detector(tiny_detector_run), [image], tta=True)
