"""Callbacks of a run: the best checkpoint kept, early stopping, a resumed run's count."""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras
import numpy as np
import pytest

from defectscope.training.callbacks import NO_SCORE, BestCheckpoint, best_so_far
from defectscope.training.detect_parts import BestDetector


def _tiny_model(name: str) -> keras.Model:
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs), name=name)


def _set_weight(model: keras.Model, value: float) -> None:
    model.set_weights([np.full_like(w, value) for w in model.get_weights()])


def _saved_weight(path: Path) -> float:
    return float(keras.saving.load_model(path).get_weights()[0][0, 0])


def _run_epochs(callback, model: keras.Model, accuracies: list[float]) -> int:
    """Feed one epoch per accuracy (the model's weights set to the epoch's number); returns
    how many epochs ran before early stopping."""
    callback.set_model(model)
    model.stop_training = False
    for epoch, accuracy in enumerate(accuracies):
        _set_weight(model, epoch + 1)
        callback.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_xent": 1.0})
        if model.stop_training:
            return epoch + 1
    return len(accuracies)


def test_the_best_epoch_is_saved_and_never_overwritten_by_a_worse_one(tmp_path: Path) -> None:
    path, model = tmp_path / "best.keras", _tiny_model("classifier")
    checkpoint = BestCheckpoint(path)
    ran = _run_epochs(checkpoint, model, [0.5, 0.7, 0.6, 0.7, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert ran == 10  # patience 0: never stops
    assert _saved_weight(path) == 2.0  # epoch 2; the tie at epoch 4 does not replace it
    assert checkpoint.best[0] == 0.7 and checkpoint.wait == 8


EARLIER = (0.6, 1, -1.0)  # a best of epochs run before a resume (or of phase 1)


@pytest.mark.parametrize(
    ("patience", "best", "wait", "ran"),
    [(3, NO_SCORE, 0, 5), (1, NO_SCORE, 0, 3), (3, EARLIER, 2, 1), (3, EARLIER, 1, 5)],
)
def test_early_stopping_counts_epochs_without_a_better_score(
    tmp_path: Path, patience: int, best: tuple, wait: int, ran: int
) -> None:
    """Epoch 2 is the best. The ``wait`` epochs run since an earlier best (a resumed run) count
    too, until a better score resets the count."""
    checkpoint = BestCheckpoint(tmp_path / "best.keras", best, patience=patience, wait=wait)
    assert _run_epochs(checkpoint, _tiny_model("m"), [0.5, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6]) == ran


def test_a_non_chief_worker_decides_alike_and_writes_nothing(tmp_path: Path) -> None:
    checkpoint = BestCheckpoint(tmp_path / "best.keras", patience=2, write=False)
    assert _run_epochs(checkpoint, _tiny_model("m"), [0.5, 0.7, 0.6, 0.6, 0.9]) == 4
    assert checkpoint.best[0] == 0.7 and not (tmp_path / "best.keras").exists()


def test_a_resumed_run_never_replaces_a_better_checkpoint(tmp_path: Path) -> None:
    path, model = tmp_path / "best.keras", _tiny_model("m")
    _set_weight(model, 42.0)
    model.save(path)
    checkpoint = BestCheckpoint(path, best=(0.8, 1, -0.5))
    _run_epochs(checkpoint, model, [0.7, 0.8])  # worse, then equal accuracy but worse xent
    assert _saved_weight(path) == 42.0


def test_the_best_detector_is_scored_on_selection_map_and_saves_the_detector(
    tmp_path: Path,
) -> None:
    """The model being fitted (heads on cached features) is not what is saved: the detector."""
    path, fitted, detector = tmp_path / "best.keras", _tiny_model("heads"), _tiny_model("det")
    checkpoint = BestDetector(detector, path, best=(-1.0, -1.0), patience=2, wait=0)
    checkpoint.set_model(fitted)
    fitted.stop_training = False
    for epoch, (map50, map50_95) in enumerate([(0.2, 0.1), (0.4, 0.1), (0.4, 0.05), (0.3, 0.2)]):
        _set_weight(detector, epoch + 1)
        checkpoint.on_epoch_end(epoch, {"val_map50": map50, "val_map50_95": map50_95})
    assert keras.saving.load_model(path).name == "det"
    assert _saved_weight(path) == 2.0  # mAP@0.5 first; mAP@0.5:0.95 only breaks ties
    assert fitted.stop_training and checkpoint.wait == 2


def test_best_so_far_counts_from_the_first_occurrence_of_the_best() -> None:
    assert best_so_far([-1.0]) == (-1.0, 0)
    assert best_so_far([-1.0, 0.3, 0.5, 0.5, 0.2]) == (0.5, 2)


class _Killed(Exception):
    pass


class _Recorder(keras.callbacks.Callback):
    """The weights after every step (raw) and at every epoch's end (as later callbacks see
    them); ``crash_at``: raise at that epoch's start, as a killed run stops; ``stop_at``: stop
    early at that epoch's end, as early stopping does."""

    def __init__(self, crash_at: int | None = None, stop_at: int | None = None) -> None:
        super().__init__()
        self.steps, self.epoch_ends = [], []
        self.crash_at, self.stop_at = crash_at, stop_at

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.crash_at:
            raise _Killed(f"killed at the start of epoch {epoch}")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps.append(self.model.get_weights())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_ends.append(self.model.get_weights())
        self.model.stop_training = epoch == self.stop_at


def _fit_averaged(momentum: float, backup: Path, crash_at=None, stop_at=None, resumed=False):
    from defectscope.training.callbacks import AveragedWeights, ChiefBackupAndRestore
    from defectscope.training.detect_parts import scaled_rate_adam

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(8, 2)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=scaled_rate_adam(0.05, [], 1.0, momentum), loss="mse")
    recorder = _Recorder(crash_at, stop_at)
    averaged = [AveragedWeights(resumed)] if momentum else []
    callbacks = [*averaged, recorder, ChiefBackupAndRestore(str(backup))]
    with contextlib.nullcontext() if crash_at is None else pytest.raises(_Killed):
        model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
    return model, recorder


def _moving_average(steps: list, momentum: float) -> list:
    """Keras' optimizer EMA by hand: the first step's weights, then m * average + (1 - m) * w."""
    average = steps[0]
    for weights in steps[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights, strict=True)]
    return average


def test_averaged_weights_are_what_epoch_ends_see_and_training_ends_with(tmp_path: Path) -> None:
    momentum, per_epoch = 0.5, 2
    model, seen = _fit_averaged(momentum, tmp_path / "a")
    _, plain = _fit_averaged(0.0, tmp_path / "b")
    for raw, reference in zip(seen.steps, plain.steps, strict=True):  # training runs on raw
        for got, expected in zip(raw, reference, strict=True):
            np.testing.assert_array_equal(got, expected)  # bit for bit: the same training path
    for epoch, weights in enumerate(seen.epoch_ends):
        expected = _moving_average(seen.steps[: (epoch + 1) * per_epoch], momentum)
        for got, want in zip(weights, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(weights[0], seen.steps[(epoch + 1) * per_epoch - 1][0])
    for got, want in zip(model.get_weights(), seen.epoch_ends[-1], strict=True):
        np.testing.assert_array_equal(got, want)  # the average, not the raw weights, at the end
    stopped, early = _fit_averaged(momentum, tmp_path / "c", stop_at=1)
    assert len(early.epoch_ends) == 2
    for got, want in zip(stopped.get_weights(), early.epoch_ends[-1], strict=True):
        np.testing.assert_array_equal(got, want)  # also when early stopping ends training


def test_a_run_killed_between_epochs_resumes_with_the_same_averaged_and_raw_weights(
    tmp_path: Path,
) -> None:
    whole, seen = _fit_averaged(0.5, tmp_path / "whole")
    _fit_averaged(0.5, tmp_path / "killed", crash_at=2)
    resumed, after = _fit_averaged(0.5, tmp_path / "killed", resumed=True)
    assert len(after.steps) == 2  # only the third epoch ran again
    expected = seen.steps[-1] + whole.get_weights()  # raw weights, then averaged
    for got, want in zip(after.steps[-1] + resumed.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_loss_that_turns_nan_stops_the_run_naming_the_step_and_the_rate() -> None:
    """Keras' TerminateOnNaN would stop quietly and leave diverged weights to be evaluated."""
    from defectscope.core.errors import TrainingDivergedError
    from defectscope.training.callbacks import StopOnDivergence

    def create_model():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    features = np.ones((4, 2), np.float32)
    targets = np.array([[1.0], [1.0], [np.nan], [1.0]], np.float32)  # the third step's loss
    guard = StopOnDivergence("detect", "detect", 0.001)
    with pytest.raises(
        TrainingDivergedError,
        match=r"detect epoch 1, step 3: .* nan.*detect\.learning_rate \(now 0\.001\)",
    ):
        create_model().fit(
            features, targets, batch_size=1, epochs=2, shuffle=False, callbacks=[guard], verbose=0
        )
    finite = StopOnDivergence("head", "head", 0.001)
    create_model().fit(
        features[:2], targets[:2], batch_size=1, epochs=2, callbacks=[finite], verbose=0
    )
