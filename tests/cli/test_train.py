"""``train``'s options as the config resolver takes them."""

from __future__ import annotations

from defectscope.cli.train import _config_options
from defectscope.training.config import resolve_config


def test_a_detectors_epochs_and_batch_size_are_its_own() -> None:
    options = _config_options("detect", 3, 4, data="d", out="r", seed=7)
    assert options["detect"] == {"epochs": 3, "batch_size": 4}
    config = resolve_config("detect", **options)
    assert (config.detect.epochs, config.detect.batch_size, config.seed) == (3, 4, 7)
    assert config.finetune.epochs == resolve_config("detect", data="d").finetune.epochs


def test_a_classifiers_epochs_and_batch_size_are_fine_tunings() -> None:
    options = _config_options(None, 3, 4, data="d", out="r")
    config = resolve_config(None, **options)
    assert (config.finetune.epochs, config.batch_size) == (3, 4)
    assert options["detect"] is None


def test_a_detector_without_epochs_keeps_the_presets() -> None:
    options = _config_options("detect", None, None, data="d", out="r")
    preset = resolve_config("detect", data="d").detect
    assert resolve_config("detect", **options).detect == preset
