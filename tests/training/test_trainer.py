"""The trainer on a tiny synthetic set: run folder contents, class weights, resume rules."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from defectscope.core.errors import RunFolderError
from defectscope.training.head import class_weights
from defectscope.training.trainer import resume, train
from tests.helpers import tiny_config


def test_run_folder_holds_everything(tiny_run: Path) -> None:
    for name in (
        "config.yaml",
        "results.csv",
        "state.json",
        "training_curves.png",
        "weights/best.keras",
        "weights/last.keras",
        "weights/metadata.json",
        "splits.csv",
        "evaluation/metrics.json",
        "evaluation/confusion_matrix.png",
        "evaluation/report.md",
        "evaluation/misclassified.csv",
        "evaluation/misclassified.png",
    ):
        assert (tiny_run / name).is_file(), name
    assert any((tiny_run / "logs").rglob("events.out.tfevents*"))
    assert not (tiny_run / "backup").exists()
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert config["image_size"] == 71 and config["augment"]["flip"] is True
    with open(tiny_run / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["phase"], r["epoch"]) for r in rows] == [
        ("head", "1"),
        ("head", "2"),
        ("finetune", "1"),
    ]
    metrics = json.loads((tiny_run / "evaluation" / "metrics.json").read_text())
    assert metrics["num_images"] == 12
    assert metrics["measured_on"] == "validation (12 images)"
    assert metrics["selected_on"] == "selection (6 images)"  # one of the 4 training images
    with open(tiny_run / "splits.csv") as handle:  # of each class chooses, 3 train
        sets = [row["set"] for row in csv.DictReader(handle)]
    assert (sets.count("fit"), sets.count("selection"), sets.count("validation")) == (18, 6, 12)
    state = json.loads((tiny_run / "state.json").read_text())
    assert state["stage"] == "done" and state["val_accuracy"] == metrics["accuracy"]
    metadata = json.loads((tiny_run / "weights" / "metadata.json").read_text())
    assert metadata["classes"][0] == "crazing" and metadata["image_size"] == 71
    assert metadata["unknown"]["chosen_on"] == "selection (6 images)"
    assert "operating_point" not in metadata  # no OK class among the synthetic classes
    for name in ("best.keras", "last.keras"):  # what a user ships holds no optimizer state
        with zipfile.ZipFile(tiny_run / "weights" / name) as archive:
            weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
            assert "optimizer" not in weights, name


def test_existing_run_folder_is_not_overwritten(tiny_run: Path, synthetic_records: Path) -> None:
    with pytest.raises(RunFolderError, match="use --resume"):
        train(tiny_config(synthetic_records, tiny_run))


def test_resume_needs_a_run(tmp_path: Path, synthetic_records: Path) -> None:
    with pytest.raises(RunFolderError, match="nothing to resume"):
        resume(tmp_path / "never")


def test_class_weights_only_when_imbalanced() -> None:
    assert class_weights(np.array([0, 0, 1, 1]), 2, "auto") is None
    weights = class_weights(np.array([0, 0, 0, 1]), 2, "auto")
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert class_weights(np.array([0, 0, 0, 1]), 2, "none") is None
    assert class_weights(np.array([0, 1]), 2, "balanced") == {0: 1.0, 1: 1.0}


def test_resuming_a_finished_run_changes_nothing(tiny_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (tiny_run / "weights").iterdir()}
    result = resume(tiny_run)
    metrics = json.loads((tiny_run / "evaluation" / "metrics.json").read_text())
    assert result.metrics == metrics
    assert {p: p.stat().st_mtime_ns for p in (tiny_run / "weights").iterdir()} == before


def test_an_ok_class_gives_an_operating_point(tmp_path: Path) -> None:
    from defectscope.data.synthetic import synthesize_dataset
    from defectscope.inference.classifier import load_model

    classes = ("crazing", "scratches", "ok")
    root = synthesize_dataset(tmp_path / "data", 6, 3, image_size=64, seed=3, classes=classes)
    result = train(tiny_config(root, tmp_path / "run"))
    metadata = json.loads((result.run_dir / "weights" / "metadata.json").read_text())
    point = metadata["operating_point"]
    assert point["ok_class"] == "ok" and point["max_escape_rate"] == 0.01
    assert point["selection"]["escape_rate"] <= 0.01  # met where it was chosen
    view = result.metrics["defect_vs_ok"]
    assert (view["defects"], view["oks"]) == (6, 3)  # measured on the validation split
    assert (result.run_dir / "evaluation" / "defect_curves.png").is_file()
    image = next((root / "validation" / "images" / "ok").glob("*.jpg"))
    prediction = load_model(result.run_dir).predict([image])[0]
    assert prediction.defect == (
        prediction.defect_score >= point["threshold"] or prediction.unknown
    )
