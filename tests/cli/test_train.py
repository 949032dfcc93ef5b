"""``train``'s options as the config resolver takes them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from defectscope.cli.main import app
from defectscope.cli.train import _config_options
from defectscope.training.config import resolve_config


def test_a_detectors_epochs_and_batch_size_are_its_own() -> None:
    options = _config_options("detect", 3, 4, {}, data="d", out="r", seed=7)
    assert options["detect"] == {"epochs": 3, "batch_size": 4}
    config = resolve_config("detect", **options)
    assert (config.detect.epochs, config.detect.batch_size, config.seed) == (3, 4, 7)
    assert config.finetune.epochs == resolve_config("detect", data="d").finetune.epochs


def test_a_classifiers_epochs_and_batch_size_are_fine_tunings() -> None:
    options = _config_options(None, 3, 4, {}, data="d", out="r")
    config = resolve_config(None, **options)
    assert (config.finetune.epochs, config.batch_size) == (3, 4)
    assert options["detect"] is None


def test_a_detector_without_epochs_keeps_the_presets() -> None:
    options = _config_options("detect", None, None, {}, data="d", out="r")
    preset = resolve_config("detect", data="d").detect
    assert resolve_config("detect", **options).detect == preset


def test_time_is_a_detectors_budget_and_zero_lifts_it() -> None:
    options = _config_options("detect", None, None, {"time_minutes": 45.0}, data="d", out="r")
    assert resolve_config("detect", **options).detect.time_minutes == 45.0
    lifted = _config_options("detect", None, None, {"time_minutes": 0.0}, data="d", out="r")
    assert resolve_config("detect", **lifted).detect.time_minutes == 0.0
    assert resolve_config("detect", data="d").detect.time_minutes == 0.0  # no limit by default


def test_finetune_epochs_are_a_detectors_and_zero_keeps_its_encoder_frozen() -> None:
    assert resolve_config("detect", data="d").detect.finetune_epochs == 6  # the preset's
    for epochs in (0, 2):
        options = _config_options("detect", None, None, {"finetune_epochs": epochs}, data="d")
        assert resolve_config("detect", **options).detect.finetune_epochs == epochs
    assert resolve_config(None, data="d").detect.finetune_epochs == 0


@pytest.mark.parametrize("task", ["classify", None])
@pytest.mark.parametrize("flag", ["--time", "--finetune-epochs"])
def test_detector_flags_on_a_classifier_are_refused_before_anything_runs(
    tmp_path, task, flag
) -> None:
    args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), flag, "3"]
    result = CliRunner().invoke(app, args + (["--task", task] if task else []))
    assert result.exit_code != 0
    assert f"{flag} is for detectors (task detect), not task 'classify'" in result.output
    assert not (tmp_path / "run").exists()


def test_options_given_with_resume_are_named_as_ignored(tmp_path) -> None:
    """--resume goes on with the run's own config.yaml; a --time or --epochs given with it
    would otherwise be dropped without a word."""
    from defectscope.training.config import save_config
    from defectscope.training.run_folder import RunFolder, RunState, Stage

    run = RunFolder(tmp_path / "run")
    (run.evaluation_dir).mkdir(parents=True)
    save_config(resolve_config(None, data="d", out=str(run.root)), run.config_file)
    run.write_state(RunState(stage=Stage.DONE))
    metrics = {"accuracy": 1.0, "num_images": 2, "num_errors": 0, "macro_f1": 1.0}
    (run.evaluation_dir / "metrics.json").write_text(json.dumps(metrics))
    args = ["train", "--resume", str(run.root), "--time", "30", "--epochs", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"--resume goes on with {run.root}/config.yaml; ignored: --epochs, --time" in (
        result.output
    )
    quiet = CliRunner().invoke(app, ["train", "--resume", str(run.root)])
    assert quiet.exit_code == 0 and "ignored" not in quiet.output
