"""A detector exported (ONNX, float and int8), benchmarked and served with its boxes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from defectscope.deploy.export import ExportError, export_model
from defectscope.deploy.server import create_app
from defectscope.inference.detector import RAW_OUTPUTS, load_detector, raw_outputs


def _png(width: int = 120, height: int = 80) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_same_detections(keras_detector, exported, tmp_path: Path):
    """The export gives the Keras detector's raw outputs on every view it runs (the plain
    image, or the three of ``--tta``; each within 1e-3 of the output's largest value) and as
    many boxes on a real image file. The boxes themselves are not compared one by one: an
    untrained detector's scores nearly tie (all near 0.0105), so which of two overlapping
    boxes survives suppression moves with float rounding (a fresh-clone run with oneDNN
    swapped one in TFLite's top ten); the decoding after the network is one code for both.
    Returns what the export found on the image file."""
    image = tmp_path / "plate.png"
    image.write_bytes(_png())
    keras_found = next(keras_detector.detect([image], confidence=0.0))
    found = next(exported.detect([image], confidence=0.0))
    assert len(keras_found.boxes) == len(found.boxes) > 0
    pixels = np.random.default_rng(1).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)
    views = keras_detector.flips.views(pixels) if keras_detector.flips else {"none": pixels}
    assert len(views) == (3 if keras_detector.flips else 1)
    for view, view_pixels in views.items():
        assert_same_outputs(keras_detector, exported, view_pixels, 1e-3, view)
    return found


def assert_same_outputs(keras, export, images, tolerance: float, view: str = "") -> None:
    """The export's raw outputs on ``images`` are the Keras detector's, each within
    ``tolerance`` of that output's largest value."""
    expected = keras.backend.predict_outputs(images)
    found = raw_outputs(export.backend.predict_outputs(images), len(keras.classes), export.path)
    for name in RAW_OUTPUTS:
        reference = np.asarray(expected[name])
        difference = np.abs(np.asarray(found[name]) - reference).max()
        assert difference <= tolerance * float(np.abs(reference).max()), (view, name)


@pytest.fixture(scope="module")
def onnx_export(tiny_detector_run: Path, synthetic_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("detector-export") / "onnx"
    # an untrained detector's scores are near ties, so its mAP moves with float rounding: its
    # parity is checked box by box below; mAP parity is measured on trained detectors
    export_model(tiny_detector_run, "onnx", out, data=synthetic_root, parity=False)
    return out


def test_onnx_export_finds_the_same_boxes_as_keras(
    onnx_export: Path, tiny_detector_run: Path, tmp_path: Path
) -> None:
    metadata = json.loads((onnx_export / "metadata.json").read_text())
    assert metadata["task"] == "detect" and metadata["format"] == "onnx"
    exported = load_detector(onnx_export)
    assert exported.backend_name == "onnx"
    assert_same_detections(load_detector(tiny_detector_run), exported, tmp_path)


def test_a_tflite_export_finds_keras_boxes_plain_and_with_flips(
    tiny_detector_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """The TFLite interpreter runs the three views of ``--tta`` one after the other at batch 1,
    as it runs a plain batch: both give the Keras detector's outputs and as many boxes."""
    out = tmp_path / "tflite"
    export_model(tiny_detector_run, "tflite", out, data=synthetic_root, parity=False)
    for tta in (False, True):
        exported = load_detector(out, tta=tta)
        assert exported.backend_name == "tflite"
        assert_same_detections(load_detector(tiny_detector_run, tta=tta), exported, tmp_path)


@pytest.mark.parametrize("fmt", ["onnx-int8", "tflite-int8"])
def test_int8_detector_export_calibrates_on_boxes_data_and_stays_close_to_keras(
    fmt: str, tiny_detector_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """Calibrated on the training images of a dataset root (converted once); its raw outputs
    stay within 5% of their scale of the Keras detector's, a few int8 steps (measured: box
    deltas 2.8%, logits 0.2%; an untrained detector's logits are near ties, so its mAP parity
    is checked in the real-data test)."""
    out = tmp_path / fmt
    metadata = export_model(
        tiny_detector_run, fmt, out, data=synthetic_root, calibration_images=8, parity=False
    )
    assert metadata["format"] == fmt and metadata["task"] == "detect"
    keras, export = load_detector(tiny_detector_run), load_detector(out)
    assert export.backend_name == fmt.removesuffix("-int8")
    images = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    assert_same_outputs(keras, export, images, 0.05)


def test_an_export_outside_the_map_parity_limit_fails_and_leaves_nothing(
    tiny_detector_run: Path, synthetic_records: Path, tmp_path: Path, monkeypatch
) -> None:
    import defectscope.deploy.export_detector as export_detector

    monkeypatch.setattr(export_detector, "MAX_MAP_LOSS", -1.0)  # every export now fails it
    # tflite-int8: the same gate as onnx-int8 at a third of the conversion time
    with pytest.raises(ExportError, match=r"tflite-int8: mAP@0.5 .* \(tflite keeps it\)"):
        export_model(
            tiny_detector_run, "tflite-int8", tmp_path / "int8", synthetic_records, "validation", 8
        )
    assert not (tmp_path / "int8").exists() and not list(tmp_path.iterdir())


def test_the_service_answers_boxes_counts_and_the_surest_label(onnx_export: Path) -> None:
    client = TestClient(create_app(load_detector(onnx_export)))
    answer = client.post("/predict?conf=0", files={"file": ("a.png", _png(), "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["defects"] == len(body["boxes"]) == sum(body["counts"].values()) > 0
    assert (body["width"], body["height"]) == (120, 80)
    best = max(body["boxes"], key=lambda b: b["confidence"])
    assert body["label"] == best["label"] and len(best["box"]) == 4
    assert all(0 <= x <= 120 for b in body["boxes"] for x in b["box"][::2])
    none = client.post("/predict?conf=1", files={"file": ("a.png", _png(), "image/png")}).json()
    assert none["boxes"] == [] and none["label"] == "" and none["defects"] == 0
    assert client.post("/predict?conf=1.5", content=_png()).status_code == 422
    assert client.post("/predict", content=b"junk").status_code == 415
    metadata = client.get("/metadata").json()
    assert metadata["task"] == "detect"
    assert metadata["box_confidence"] == load_detector(onnx_export).box_confidence
    shown = client.post(f"/predict?conf={metadata['box_confidence']}", content=_png()).json()
    assert client.post("/predict", content=_png()).json()["boxes"] == shown["boxes"]


def test_serve_iou_replaces_the_saved_threshold(onnx_export: Path, tiny_run: Path, monkeypatch):
    """``serve --iou`` decodes an export with the given threshold, /metadata says which, a
    lower one answers fewer overlapping boxes; a value outside (0, 1) or a classifier is refused."""
    import uvicorn
    from typer.testing import CliRunner

    from defectscope.cli.main import app

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda service, **_: served.update(app=service))
    monkeypatch.delenv("DEFECTSCOPE_API_KEY", raising=False)
    command = ["serve", "--allowed-host", "testserver", "--model"]  # the test client's host
    boxes = {}
    for iou in (0.05, 0.95):
        result = CliRunner().invoke(app, [*command, str(onnx_export), "--iou", str(iou)])
        assert result.exit_code == 0, result.output
        client = TestClient(served.pop("app"))
        assert client.get("/metadata").json()["detector"]["nms_iou"] == pytest.approx(iou)
        answer = client.post("/predict?conf=0", content=_png()).json()
        boxes[iou] = len(answer["boxes"])
    assert 0 < boxes[0.05] < boxes[0.95]
    for bad in ("0", "1.5", "nan"):
        result = CliRunner().invoke(app, [*command, str(onnx_export), "--iou", bad])
        assert result.exit_code != 0 and f"got {float(bad)}" in result.output, result.output
    result = CliRunner().invoke(app, [*command, str(tiny_run), "--iou", "0.4"])
    assert result.exit_code != 0 and "needs a detector" in result.output
    assert "app" not in served


def test_test_time_flips_on_an_export_and_in_the_service(
    onnx_export: Path, tiny_detector_run: Path, tiny_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """An ONNX export with ``tta`` finds the Keras detector's boxes with flips; ``serve --tta``
    answers them and says so in /metadata; a classifier refuses ``--tta``."""
    import uvicorn
    from typer.testing import CliRunner

    from defectscope.cli.main import app

    keras_detector = load_detector(tiny_detector_run, tta=True)
    onnx_found = assert_same_detections(
        keras_detector, load_detector(onnx_export, tta=True), tmp_path
    )
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda service, **_: served.update(app=service))
    monkeypatch.delenv("DEFECTSCOPE_API_KEY", raising=False)
    command = ["serve", "--allowed-host", "testserver", "--tta", "--model"]
    result = CliRunner().invoke(app, [*command, str(onnx_export)])
    assert result.exit_code == 0, result.output
    client = TestClient(served.pop("app"))
    assert client.get("/metadata").json()["test_time_flips"] is True
    answer = client.post("/predict?conf=0", content=_png()).json()
    assert len(answer["boxes"]) == len(onnx_found.boxes)
    result = CliRunner().invoke(app, [*command, str(tiny_run)])
    assert (
        result.exit_code != 0 and "--tta" in result.output and "needs a detector" in result.output
    )
    assert "app" not in served


def test_benchmark_tta_times_the_detector_with_flips(
    tiny_detector_run: Path, tiny_run: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from defectscope.cli.main import app

    out = tmp_path / "bench.json"
    command = ["benchmark", "--formats", "", "--batch", "1", "--seconds", "0.3", "--tta"]
    result = CliRunner().invoke(
        app, [*command, "--model", str(tiny_detector_run), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = {row["backend"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"keras", "keras+tta"} and "keras+tta" in result.output
    assert rows["keras+tta"]["p50_ms"] > rows["keras"]["p50_ms"]  # three views, one decode
    result = CliRunner().invoke(app, [*command, "--model", str(tiny_run)])
    assert (
        result.exit_code != 0 and "--tta" in result.output and "needs a detector" in result.output
    )
