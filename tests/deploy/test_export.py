"""Exports of the tiny model: every format loads, agrees with Keras and is usable everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defectscope.deploy.export import ExportError, export_model
from defectscope.evaluation.evaluate import evaluate
from defectscope.inference.classifier import load_model
from defectscope.inference.model_files import locate_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exports(tiny_run: Path, synthetic_records: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("exports")
    return {
        fmt: export_model(tiny_run, fmt, root / fmt, data=synthetic_records)
        for fmt in ("savedmodel", "tflite", "onnx")
    }


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_fp32_exports_agree_with_keras(exports, fmt: str, tiny_run: Path) -> None:
    metadata = exports[fmt]
    parity = metadata["parity"]
    assert parity["top1_agreement"] == 1.0
    assert parity["max_probability_difference"] < 1e-4
    assert parity["num_images"] == 12
    stored = json.loads((Path(metadata["export_dir"]) / "metadata.json").read_text())
    assert stored["format"] == fmt and stored["classes"][0] == "crazing"
    assert stored["image_size"] == 71 and stored["validation_accuracy"] == parity["export_accuracy"]
    source = (Path(metadata["export_dir"]) / stored["source_model"]).resolve()
    assert not Path(stored["source_model"]).is_absolute()  # the links survive a copied run
    assert source == (tiny_run / "weights" / "best.keras").resolve()
    classifier = load_model(metadata["export_dir"])
    assert classifier.backend_name == fmt
    images = np.random.default_rng(0).uniform(0, 255, (3, 71, 71, 3)).astype(np.float32)
    keras = load_model(tiny_run)
    np.testing.assert_allclose(
        classifier.predict_arrays(images), keras.predict_arrays(images), atol=1e-4
    )


def test_exports_work_with_evaluate_and_predict(
    exports, tiny_run, synthetic_records, synthetic_root, tmp_path
):
    keras_metrics = evaluate(tiny_run, synthetic_records, out=tmp_path / "k")
    for fmt in ("tflite", "onnx"):
        metrics = evaluate(exports[fmt]["export_dir"], synthetic_records, out=tmp_path / fmt)
        assert metrics["confusion_matrix"] == keras_metrics["confusion_matrix"]
    image = next((synthetic_root / "validation/images/patches").glob("*.jpg"))
    onnx, tflite = (load_model(exports[f]["export_dir"]) for f in ("onnx", "tflite"))
    assert onnx.predict([image])[0].label == tflite.predict([image])[0].label


def test_int8_export_calibrates_and_loads(tiny_run, synthetic_records, tmp_path) -> None:
    metadata = export_model(
        tiny_run,
        "onnx-int8",
        tmp_path / "q",
        data=synthetic_records,
        calibration_images=8,
        parity=False,
    )
    classifier = load_model(metadata["export_dir"])
    probabilities = classifier.predict_arrays(np.full((2, 71, 71, 3), 120, np.float32))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=6 / 255)  # uint8 softmax steps
    graph = (Path(metadata["export_dir"]) / "model.onnx").read_bytes()
    assert b"QuantizeLinear" in graph


def test_locating_models_and_bad_requests(exports, tiny_run: Path) -> None:
    assert locate_model(tiny_run).kind == "keras"
    assert locate_model(exports["savedmodel"]["export_dir"]).kind == "savedmodel"
    assert locate_model(Path(exports["tflite"]["export_dir"]) / "model.tflite").kind == "tflite"
    with pytest.raises(ValueError, match="got 'coreml'"):
        export_model(tiny_run, "coreml")
    with pytest.raises(ExportError, match="starts from a Keras run"):
        export_model(exports["onnx"]["export_dir"], "tflite")
