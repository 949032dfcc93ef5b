"""``detect.finetune_epochs``: the whole detector trained after its heads, chosen on selection,
and the end's choices made through the tuned encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defectscope.core.errors import ConfigError
from defectscope.training.config import config_from_dict
from defectscope.training.trainer import resume, train
from tests.helpers import results_rows, saved_detector, tiny_detector_config

FINETUNE = {"epochs": 1, "batch_size": 8, "confidence": 0.0, "finetune_epochs": 2}


def _layer_weights(detector, layer: str) -> list[np.ndarray]:
    import keras

    found = detector.backbone.image_encoder.get_layer(layer).weights
    return [keras.ops.convert_to_numpy(weight) for weight in found]


def _relative(found: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(found - reference) / np.linalg.norm(reference))


def _first_p3(detector, run: Path, size: int) -> np.ndarray:
    """P3 of the selection set's first images through ``detector``'s encoder."""
    import keras

    from defectscope.data.detection import create_detection_dataset
    from defectscope.training.config import load_config
    from defectscope.training.sources import open_run_sources

    sources = open_run_sources(load_config(run / "config.yaml"))
    images = next(iter(create_detection_dataset(sources.selection, size, 4)))[0]
    encoder = detector.backbone.image_encoder
    p3 = keras.Model(encoder.inputs, encoder.pyramid_outputs["P3"])
    return keras.ops.convert_to_numpy(p3(images, training=False))


def _optimizer_variables(keras_file: Path) -> int:
    """How many optimizer variables a saved ``.keras`` file holds."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(keras_file) as archive:
        data = io.BytesIO(archive.read("model.weights.h5"))
    found: list[str] = []
    with h5py.File(data, "r") as weights:
        if "optimizer/vars" in weights:
            weights["optimizer/vars"].visit(found.append)
    return len(found)


def test_the_whole_detector_trains_after_its_heads_and_the_end_sees_its_encoder(
    synthetic_records: Path, tiny_detector_run: Path, tmp_path: Path, monkeypatch, recwarn
) -> None:
    """Same seed as the frozen tiny run, so the same initial weights: the encoder's kernels
    changed, its BatchNormalization statistics did not; results.csv holds both phases; the
    decoding is chosen on selection features of the saved best detector's encoder. The saved
    detectors carry no Adam state (twice the weights); no load skipped an optimizer's or
    warned that it did not compile the detector."""
    from defectscope.training import detect

    seen = {}
    choose = detect.choose_decoding

    def spy(run, config, selection, classes, mirrored):
        seen["P3"] = np.asarray(selection.features(range(4))["P3"], np.float32)
        seen["best"] = saved_detector(run.root, "best")
        return choose(run, config, selection, classes, mirrored)

    monkeypatch.setattr(detect, "choose_decoding", spy)
    run = tmp_path / "run"
    result = train(tiny_detector_config(synthetic_records, run, detect=FINETUNE))
    assert 0.0 <= result.metrics["map50"] <= 1.0
    assert len(results_rows(run, "detect")) == 1
    tuned_rows = results_rows(run, "detect-finetune")
    assert [row["epoch"] for row in tuned_rows] == ["1", "2"]
    assert all(row["selection_map50"] != "" for row in tuned_rows)
    frozen, tuned = saved_detector(tiny_detector_run), saved_detector(run)
    for kernel in ("block1_conv1", "block13_sepconv2"):
        assert not np.array_equal(
            _layer_weights(frozen, kernel)[0], _layer_weights(tuned, kernel)[0]
        )
    statistics = zip(
        _layer_weights(frozen, "block1_conv1_bn"),
        _layer_weights(tuned, "block1_conv1_bn"),
        strict=True,
    )
    for before, after in statistics:
        np.testing.assert_array_equal(before, after)
    cached, initial = seen["P3"], _first_p3(frozen, run, 96)
    tuned_p3 = _first_p3(seen["best"], run, 96)
    off_tuned, off_initial = _relative(cached, tuned_p3), _relative(cached, initial)
    assert off_tuned < 0.3 * off_initial, (off_tuned, off_initial)
    assert not (run / ".tuned-features").exists()
    assert json.loads((run / "state.json").read_text())["stage"] == "done"
    for name in ("best", "last"):  # KerasHub's own compile: its step count and learning rate
        assert _optimizer_variables(run / "weights" / f"{name}.keras") <= 2
    loading = ("Skipping variable loading", "`compile()` was not called")
    warned = [str(w.message) for w in recwarn if str(w.message).startswith(loading)]
    assert warned == []


def test_a_run_killed_in_the_whole_detectors_epochs_resumes_at_the_epoch_it_was_in(
    synthetic_records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectscope.training import detect_finetune

    measure = detect_finetune.ImageSelectionMap.measure
    calls = []

    def killed_in_epoch_two(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed in the second epoch")
        return measure(self)

    monkeypatch.setattr(detect_finetune.ImageSelectionMap, "measure", killed_in_epoch_two)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_detector_config(synthetic_records, run, detect=FINETUNE))
    assert json.loads((run / "state.json").read_text())["stage"] == "heads_trained"
    heads, first = results_rows(run, "detect"), results_rows(run, "detect-finetune")
    assert len(heads) == 1 and [row["epoch"] for row in first] == ["1"]
    monkeypatch.setattr(detect_finetune.ImageSelectionMap, "measure", measure)
    result = resume(run)
    assert results_rows(run, "detect") == heads  # the heads did not train again
    rows = results_rows(run, "detect-finetune")
    assert [row["epoch"] for row in rows] == ["1", "2"] and rows[0] == first[0]
    assert 0.0 <= result.metrics["map50"] <= 1.0


def test_a_budgeted_run_counts_its_time_once_across_both_phases(
    synthetic_records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both budgets go on from one clock, read when the process started, not from the time the
    heads' budget wrote into state.json (which already holds this process's time): counted
    twice, a budgeted NEU-DET run believed 33 minutes spent after 17. The whole detector's
    budget estimates the end from the heads' cached selection evaluation, kept in state.json;
    the encoder's time per image is measured once for both."""
    import time

    from defectscope.training import detect, time_budget

    clocks, end_evaluations, encoder_timings, training_batches = [], [], [], []
    create, time_encoder = detect.create_time_budget, time_budget.encoder_seconds_per_image
    time_training = time_budget.encoder_training_seconds_per_image

    def spy(*args, **kwargs):
        clocks.append(kwargs["clock"])
        end_evaluations.append(kwargs.get("end_selection_seconds"))
        return create(*args, **kwargs)

    def timed(detector):
        encoder_timings.append(time_encoder(detector))
        return encoder_timings[-1]

    def timed_training(detector, batch_size):
        training_batches.append(batch_size)
        return time_training(detector, batch_size)

    monkeypatch.setattr(detect, "create_time_budget", spy)
    monkeypatch.setattr(time_budget, "encoder_seconds_per_image", timed)
    monkeypatch.setattr(time_budget, "encoder_training_seconds_per_image", timed_training)
    run = tmp_path / "run"
    started = time.perf_counter()
    train(tiny_detector_config(synthetic_records, run, detect={**FINETUNE, "time_minutes": 600}))
    wall = time.perf_counter() - started
    assert len(clocks) == 2 and clocks[0] == clocks[1] and clocks[0].before == 0.0
    assert len(encoder_timings) == 1  # both budgets read one timing of the encoder
    assert training_batches == [FINETUNE["batch_size"]]  # the whole epochs' batch, once
    state = json.loads((run / "state.json").read_text())
    assert 0 < state["budget_seconds"] <= wall, (state["budget_seconds"], wall)
    assert end_evaluations[0] is None and end_evaluations[1] == state["selection_seconds"] > 0
    assert len(results_rows(run, "detect-finetune")) == 2  # 600 minutes: nothing stopped


@pytest.mark.parametrize(
    ("setting", "bad"),
    [
        ("finetune_epochs", -1),
        ("finetune_epochs", 1.5),
        ("finetune_epochs", True),
        ("finetune_learning_rate", 0),
        ("finetune_learning_rate", float("nan")),
        ("finetune_learning_rate", "fast"),
        ("finetune_heads_learning_rate", 0),
        ("finetune_heads_learning_rate", -1e-3),
        ("finetune_heads_learning_rate", "fast"),
    ],
)
def test_finetune_settings_repeat_the_bad_value(setting: str, bad) -> None:
    with pytest.raises(ConfigError, match=f"detect.{setting} must be .*got {bad!r}"):
        config_from_dict({"task": "detect", "detect": {setting: bad}})


@pytest.mark.parametrize(("heads_rate", "expected_head_step"), [(None, 1e-3), (1e-2, 1e-2)])
def test_the_heads_can_train_faster_than_the_encoder_in_the_whole_detectors_epochs(
    heads_rate, expected_head_step: float
) -> None:
    """Adam's first step is the learning rate itself for any gradient well above its epsilon:
    the encoder moves by ``finetune_learning_rate``, the heads by
    ``finetune_heads_learning_rate`` (the encoder's when unset)."""
    import keras

    from defectscope.models.detector import create_detector
    from defectscope.training.detect_finetune import _compile, unfreeze_encoder

    detector = create_detector(["dent", "rust"], image_size=96, weights=None, head_convs=1)
    unfreeze_encoder(detector)
    rates = {"finetune_learning_rate": 1e-3, "finetune_heads_learning_rate": heads_rate}
    config = config_from_dict(
        {"task": "detect", "image_size": 96, "detect": {"finetune_epochs": 1, **rates}}
    )
    _compile(detector, config, steps=1)  # no warm-up: the first step is at the peak
    kernels = {
        "encoder": detector.backbone.image_encoder.get_layer("block13_sepconv1").pointwise_kernel,
        "head": detector.classification_head.prediction_layer.kernel,
    }
    before = {name: keras.ops.convert_to_numpy(w) for name, w in kernels.items()}
    detector.optimizer.build(detector.trainable_variables)
    detector.optimizer.apply_gradients([(keras.ops.ones(w.shape), w) for w in kernels.values()])
    step = {
        name: np.abs(keras.ops.convert_to_numpy(w) - before[name]).max()
        for name, w in kernels.items()
    }
    np.testing.assert_allclose(step["encoder"], 1e-3, rtol=0.01)
    np.testing.assert_allclose(step["head"], expected_head_step, rtol=0.01)
