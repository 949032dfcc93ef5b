"""Training inputs checked before TensorFlow: one line for each mistake, no run folder left."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectscope.core.errors import ConfigError, RunFolderError
from defectscope.data.layout import DatasetLayoutError
from defectscope.data.pipeline import DataSourceError
from defectscope.models import xception
from defectscope.training.checks import check_train_config
from defectscope.training.trainer import train
from tests.helpers import tiny_config


def test_offline_imagenet_is_one_clear_line(
    synthetic_records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(xception.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # nothing cached
    monkeypatch.setattr(xception, "_can_download", lambda: False)
    config = tiny_config(synthetic_records, tmp_path / "run", weights="imagenet")
    with pytest.raises(ConfigError, match=r"cannot download them \(no internet\).*--weights"):
        check_train_config(config)


def test_the_weights_variable_stands_in_for_imagenet(
    synthetic_records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(xception.WEIGHTS_ENV, str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ConfigError, match=r"weights file not found: '.*missing\.weights\.h5'"):
        xception.resolve_weights("imagenet")
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    monkeypatch.setenv(xception.WEIGHTS_ENV, str(weights))
    assert xception.resolve_weights("imagenet") == str(weights)


def test_bad_values_and_paths_fail_before_any_run_folder(
    synthetic_records: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    cases = [
        (tiny_config(tmp_path / "nope", tmp_path / "r"), DatasetLayoutError, "no such directory"),
        (tiny_config(synthetic_records, tmp_path / "r", image_size=50), ConfigError, ">= 71"),
        (
            tiny_config(synthetic_records, tmp_path / "r", finetune={"unfreeze_from": "b9"}),
            ConfigError,
            "'b9'",
        ),
        (tiny_config(synthetic_root, synthetic_root / "runs"), ConfigError, "lies inside"),
        (
            tiny_config(synthetic_records, tmp_path / "r", val_split="test"),
            DataSourceError,
            "no split 'test'",
        ),
    ]
    for config, error, message in cases:
        with pytest.raises(error, match=message):
            train(config)
        assert not (tmp_path / "r").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(RunFolderError, match="use --resume"):
        check_train_config(tiny_config(synthetic_records, tmp_path / "used"))


def test_a_run_that_fails_before_its_head_leaves_nothing(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    for image in (synthetic_copy / "validation" / "images").rglob("*.jpg"):
        image.write_bytes(b"not an image any more")  # validation holds no usable image
    with pytest.raises(DataSourceError, match="holds no usable image"):
        train(tiny_config(synthetic_copy, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
