"""``detect.time_minutes``: the epochs that fit, a run that stops there, a clock that resumes."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from defectscope.core.errors import ConfigError
from defectscope.models.detector import create_detector
from defectscope.training.callbacks import current_learning_rate
from defectscope.training.config import DetectPhaseConfig, config_from_dict
from defectscope.training.run_folder import RunFolder
from defectscope.training.time_budget import (
    RunClock,
    TimeBudget,
    create_time_budget,
    encoder_training_seconds_per_image,
    end_seconds,
    epochs_that_fit,
    finetune_reserve,
)
from defectscope.training.trainer import train
from tests.helpers import results_rows, tiny_detector_config


def test_the_epochs_that_fit_are_whole_and_within_the_done_and_the_most() -> None:
    assert epochs_that_fit(done=1, mean_epoch=10.0, seconds_left=45.0, max_epochs=36) == 5
    assert epochs_that_fit(done=1, mean_epoch=10.0, seconds_left=1e6, max_epochs=36) == 36
    assert epochs_that_fit(done=3, mean_epoch=10.0, seconds_left=9.9, max_epochs=36) == 3
    assert epochs_that_fit(done=3, mean_epoch=10.0, seconds_left=-50.0, max_epochs=36) == 3
    assert epochs_that_fit(done=2, mean_epoch=0.0, seconds_left=10.0, max_epochs=36) == 2


def test_the_end_estimate_grows_with_the_validation_split_and_the_selection_time() -> None:
    small = end_seconds(5.0, selection_count=100, validation_count=100, encoder_seconds=0.1)
    assert end_seconds(5.0, 100, 400, 0.1) - small == pytest.approx(300 * (0.05 + 0.1))
    assert end_seconds(10.0, 100, 100, 0.1) > small


class _FakeClock:
    """Seconds that advance by ``epoch`` at every epoch's end (before the budget reads them)."""

    def __init__(self, epoch: float) -> None:
        self.now, self.epoch = 0.0, epoch

    def __call__(self) -> float:
        return self.now


def _fit_with_budget(run: RunFolder, clock: _FakeClock, budget: float, max_epochs: int):
    """A one-layer model fitted with a :class:`TimeBudget` and a cosine schedule of
    ``max_epochs`` (4 steps per epoch, 4 of warm-up); returns the learning rates at each
    epoch's end, the epochs run, and the rates the schedule gives at those ends."""
    steps = 4
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps * max_epochs - steps, warmup_target=0.1, warmup_steps=steps
    )
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    rates: list[float] = []
    advance = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(clock, "now", clock.now + clock.epoch)
    )
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: rates.append(current_learning_rate(model))
    )
    budget = TimeBudget(
        seconds=budget,
        spent=clock,
        end_estimate=lambda mean_epoch: 5.0,
        max_epochs=max_epochs,
        run=run,
        clock=clock,
    )
    data = np.ones((32, 3), np.float32), np.zeros((32, 1), np.float32)
    history = model.fit(
        *data, batch_size=8, epochs=max_epochs, callbacks=[advance, budget, record], verbose=0
    )
    planned = [float(schedule(steps * (epoch + 1))) for epoch in history.epoch]
    return rates, len(history.epoch), planned


def test_training_stops_at_the_last_epoch_that_fits_and_keeps_its_schedule(
    tmp_path: Path,
) -> None:
    """Epochs of 10 s, 55 s in all, 5 s kept for the end: five epochs fit (of at most 10);
    the learning rate is the 10-epoch schedule's all along (not shortened to end at zero),
    and the count and the time spent are in the run's state."""
    run = RunFolder(tmp_path)
    rates, epochs, planned = _fit_with_budget(run, _FakeClock(10.0), budget=55.0, max_epochs=10)
    assert epochs == 5
    assert rates == pytest.approx(planned, rel=1e-6) and rates[-1] > 0.04
    state = run.read_state()
    assert state.budget_epochs == 5 and state.budget_seconds == pytest.approx(50.0)


def test_a_budget_longer_than_the_epochs_changes_nothing(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    rates, epochs, planned = _fit_with_budget(run, _FakeClock(10.0), budget=1e6, max_epochs=3)
    assert epochs == 3 and rates == pytest.approx(planned, rel=1e-6)
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)
    assert run.read_state().budget_epochs == 3


def test_a_resumed_runs_clock_goes_on_from_the_time_its_earlier_processes_spent(
    tmp_path: Path,
) -> None:
    run = RunFolder(tmp_path)
    run.update_state(budget_seconds=600.0)  # as an interrupted run left it
    started, results_log = time.perf_counter(), SimpleNamespace(total=36)
    budget = create_time_budget(
        run,
        DetectPhaseConfig(time_minutes=30),
        encoder_seconds=0.05,
        selection_map=SimpleNamespace(seconds=4.0, count=100),
        results_log=results_log,
        validation_count=200,
        clock=RunClock.of(run, started),
    )
    assert 600.0 <= budget.spent() < 600.0 + (time.perf_counter() - started) + 1e-6
    assert budget.seconds == 1800.0 and budget.max_epochs == DetectPhaseConfig().epochs
    assert budget.end_estimate(50.0) == pytest.approx(end_seconds(4.0, 100, 200, 0.05))
    budget.on_total(12)  # the count that results.csv's log lines show ("epoch 3/12")
    assert results_log.total == 12


def test_the_whole_detectors_budget_estimates_the_end_from_a_cached_evaluation(
    tmp_path: Path,
) -> None:
    """Its epochs are scored from images (the encoder changes), the end's choices from cached
    features: the end is estimated from the latter's time, plus what is reserved."""
    run = RunFolder(tmp_path)
    budget = create_time_budget(
        run,
        DetectPhaseConfig(time_minutes=30),
        encoder_seconds=0.05,
        selection_map=SimpleNamespace(seconds=20.0, count=100),
        results_log=SimpleNamespace(total=6),
        validation_count=200,
        clock=RunClock.of(run, time.perf_counter()),
        max_epochs=6,
        reserve=lambda mean_epoch: 15.0,
        end_selection_seconds=4.0,
    )
    assert budget.max_epochs == 6
    assert budget.end_estimate(50.0) == pytest.approx(end_seconds(4.0, 100, 200, 0.05) + 15.0)


def test_time_minutes_must_be_a_number_from_zero() -> None:
    for bad in (-1, float("nan"), float("inf"), "an hour", True):
        with pytest.raises(ConfigError, match="detect.time_minutes must be >= 0"):
            config_from_dict({"task": "detect", "detect": {"time_minutes": bad}})


def test_a_detector_run_out_of_time_stops_after_one_epoch_and_still_finishes(
    synthetic_records: Path, tmp_path: Path
) -> None:
    """A budget spent before the first epoch ends: that epoch is the last, the run chooses its
    decoding and is evaluated, and the count is in state.json."""
    detect = {"epochs": 3, "batch_size": 8, "confidence": 0.0, "time_minutes": 0.001}
    result = train(tiny_detector_config(synthetic_records, tmp_path / "run", detect=detect))
    assert 0.0 <= result.metrics["map50"] <= 1.0
    assert len(results_rows(tmp_path / "run", "detect")) == 1
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["stage"] == "done" and state["budget_epochs"] == 1
    assert "time_minutes: 0.001" in (tmp_path / "run" / "config.yaml").read_text()


def test_the_heads_budget_keeps_the_whole_detectors_epochs_and_the_features_after_them() -> None:
    """Each whole-detector epoch: a heads epoch and the encoder trained on every fit image
    (its measured forward and backward time); then three selection copies through the tuned
    encoder's forward pass."""
    reserve = finetune_reserve(
        3, fit_count=1000, selection_count=100, encoder_seconds=0.05, encoder_training_seconds=0.2
    )
    assert reserve(120.0) == pytest.approx(3 * (120.0 + 0.2 * 1000) + 3 * 100 * 0.05)
    assert finetune_reserve(0, 1000, 100, 0.05, 0.2)(120.0) == 0.0


def test_timing_the_encoders_training_changes_no_weight_and_no_trainable_flag() -> None:
    """It computes gradients for the frozen encoder's weights without applying them."""
    detector = create_detector(["a", "b"], image_size=96, max_level=5)
    encoder = detector.backbone.image_encoder
    before = [weight.numpy() for weight in encoder.weights]
    flags = [layer.trainable for layer in encoder.layers]
    seconds = encoder_training_seconds_per_image(detector, batch_size=2, repeats=1)
    assert math.isfinite(seconds) and seconds > 0
    assert [layer.trainable for layer in encoder.layers] == flags
    for old, weight in zip(before, encoder.weights, strict=True):
        np.testing.assert_array_equal(old, weight.numpy())
