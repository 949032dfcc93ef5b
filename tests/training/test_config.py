"""Configs: defaults, presets, YAML files, overrides, bad keys and values named in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectscope.core.errors import ConfigError
from defectscope.training.config import (
    load_config,
    preset_names,
    resolve_config,
    save_config,
)


def test_defaults_presets_and_overrides() -> None:
    assert {"default", "demo"} <= set(preset_names())
    config = resolve_config("demo", data="d", seed=3, finetune={"epochs": 2})
    assert (config.weights, config.image_size, config.seed) == ("none", 96, 3)
    assert config.finetune.epochs == 2
    assert config.finetune.unfreeze_from == "all"  # from the preset, not lost by the override
    default = resolve_config("default")
    assert default.finetune.unfreeze_from == "block9"
    assert default == resolve_config()  # the preset states the defaults


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = resolve_config("demo", data="x", out="runs/a")
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_user_file_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("image_size: 128\naugment:\n  noise_prob: 0.5\n")
    config = resolve_config(path)
    assert (config.image_size, config.augment.noise_prob) == (128, 0.5)
    path.write_text("imagesize: 128\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['imagesize'\]"):
        resolve_config(path)
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        resolve_config("fastest")
    with pytest.raises(ValueError, match=r"class_weights must be .* got 'some'"):
        resolve_config(class_weights="some")


@pytest.mark.parametrize("section", ["finetune", "detect"])
def test_a_negative_patience_is_refused_with_its_value(section: str) -> None:
    with pytest.raises(ConfigError, match=rf"{section}.patience must be >= 0 .*got -1"):
        resolve_config(**{section: {"patience": -1}})
    assert getattr(resolve_config(**{section: {"patience": 0}}), section).patience == 0  # off
