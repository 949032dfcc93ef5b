"""Hostile and odd inputs: each gets a clear error naming the file, and nothing else is lost."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defectscope.cli.main import app
from defectscope.data.tfrecord_writer import convert_dataset
from defectscope.inference.classifier import load_model
from defectscope.inference.model_files import ModelLoadError
from tests.helpers import png_claiming_size

runner = CliRunner()


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 128, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_unicode_and_spaces_in_names_survive_convert_and_predict(
    synthetic_copy: Path, tiny_run: Path, tmp_path: Path
) -> None:
    folder = synthetic_copy / "train" / "images" / "crazing"
    odd = folder / "Prüfung Linie 3 \u2013 東京 #1.jpg"  # en dash, umlaut, CJK, spaces
    shutil.copy(next(folder.glob("*.jpg")), odd)
    manifest = convert_dataset(synthetic_copy, tmp_path / "records")
    assert manifest["splits"]["train"]["num_records"] == 25
    result = runner.invoke(
        app, ["predict", str(odd), "--model", str(tiny_run), "--out", str(tmp_path / "p.csv")]
    )
    assert result.exit_code == 0, result.output
    assert odd.name in (tmp_path / "p.csv").read_text(encoding="utf-8")


def test_wrong_extension_is_decoded_by_content(tmp_path: Path, tiny_run: Path) -> None:
    disguised = tmp_path / "really_a_png.jpg"
    disguised.write_bytes(png_bytes(40, 40))
    (prediction,) = load_model(tiny_run).predict([disguised])
    assert prediction.ok


def test_absurd_sizes(tmp_path: Path, tiny_run: Path) -> None:
    tiny, strip = tmp_path / "one_pixel.png", tmp_path / "strip.png"
    tiny.write_bytes(png_bytes(1, 1))
    strip.write_bytes(png_bytes(6000, 1))
    results = load_model(tiny_run).predict([tiny, strip])
    assert all(r.ok for r in results)  # resized to the model's input like any image


def test_bomb_gets_an_error_row_and_the_rest_is_predicted(
    synthetic_root, tiny_run, tmp_path
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming_size(60_000, 60_000))
    good = next((synthetic_root / "validation/images/crazing").glob("*.jpg"))
    results = load_model(tiny_run).predict([bomb, good])
    assert "decompression bomb" in results[0].error
    assert results[1].ok


def test_keras_file_that_would_run_code_is_refused(
    tiny_run: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    import keras

    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)  # arbitrary Python in the archive
    evil = tmp_path / "evil" / "best.keras"
    evil.parent.mkdir()
    keras.Model(inputs, outputs).save(evil)
    shutil.copy(tiny_run / "weights" / "metadata.json", evil.parent)
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(evil)
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(next((synthetic_root / "validation/images/crazing").glob("*.jpg")), images)
    result = runner.invoke(app, ["predict", str(images), "--model", str(evil)])
    assert result.exit_code == 2 and "evil/best.keras" in result.output
