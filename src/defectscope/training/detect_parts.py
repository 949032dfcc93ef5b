"""Pieces both phases of detector training use: the padded targets of KerasHub's loss, the
atomic save, the selection set's mAP after each epoch, the best-checkpoint callback, the best
score of the epochs already run and Adam with a slower rate for the pretrained encoder."""

from __future__ import annotations

import time
from pathlib import Path

import keras

from defectscope.core.atomic_io import atomic_path
from defectscope.training.callbacks import BestCheckpoint, best_so_far, read_results
from defectscope.training.detect_selection import selection_map
from defectscope.training.pyramid_cache import PyramidCache


def with_padding_row(truth: dict) -> dict:
    """``truth`` with one more padding row (box 0, class -1) per image: KerasHub 0.32's box
    matcher, force-matching every true box, indexes past the last row when an image fills all
    its rows (the image with the most boxes of a split; training stopped with an
    InvalidArgumentError)."""
    from keras import ops

    batch = ops.shape(truth["labels"])[0]
    return {
        "boxes": ops.concatenate([truth["boxes"], ops.zeros((batch, 1, 4))], axis=1),
        "labels": ops.concatenate([truth["labels"], -ops.ones((batch, 1))], axis=1),
    }


def save_detector(detector, path) -> None:
    """Save atomically, without a training optimizer's state: a detector whose optimizer has
    trained (is built) is saved as a fresh copy of its weights (Keras 3 saves the state; Adam's
    is twice the weights, and each later load warned that it skipped it). A model never
    compiled has no ``optimizer`` attribute at all."""
    optimizer = getattr(detector, "optimizer", None)
    if optimizer is not None and optimizer.built:
        weights = detector.get_weights()
        detector = type(detector).from_config(detector.get_config())
        detector.set_weights(weights)
    with atomic_path(path) as temp:
        detector.save(temp)


class SelectionMap(keras.callbacks.Callback):
    """The selection set's COCO mAP after each epoch, into the logs (``val_map50``,
    ``val_map50_95``) that :class:`BestDetector` and ``results.csv`` read; ``seconds`` holds
    the last evaluation's time, ``count`` the selection images."""

    def __init__(self, decoder, selection: PyramidCache, classes: list[str], size: int) -> None:
        super().__init__()
        self.decoder, self.selection, self.classes, self.size = decoder, selection, classes, size
        self.seconds = 0.0

    @property
    def count(self) -> int:
        return self.selection.count

    def measure(self) -> dict:
        """mAP of the heads being trained, on the cached selection features."""
        return selection_map(self.model, self.decoder, self.selection, self.classes, self.size)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        started = time.perf_counter()
        found = self.measure()
        self.seconds = time.perf_counter() - started
        if logs is not None:
            logs["val_map50"], logs["val_map50_95"] = found["map50"], found["map50_95"]


class BestDetector(BestCheckpoint):
    """:class:`BestCheckpoint` on (selection mAP@0.5, mAP@0.5:0.95), saving the whole
    detector (encoder included) rather than the model being fitted on cached features."""

    saved = "detector"

    def __init__(self, detector, path: Path, best: tuple, patience: int, wait: int) -> None:
        super().__init__(path, best, patience, wait=wait)
        self.detector = detector

    def score(self, logs: dict | None) -> tuple:
        logs = logs or {}
        return float(logs.get("val_map50", -1.0)), float(logs.get("val_map50_95", -1.0))

    def save(self) -> None:
        save_detector(self.detector, self.path)

    def describe(self, score: tuple) -> str:
        return f"selection mAP@0.5 {score[0]:.4f}, mAP@0.5:0.95 {score[1]:.4f}"


def history_best(
    results_file: Path, phases: tuple[str, ...] = ("detect",)
) -> tuple[tuple[float, float], int]:
    """The best selection score of the epochs of ``phases`` already run and how many epochs
    came after it, so that a resumed run goes on counting towards early stopping."""
    rows = [r for r in read_results(results_file) if r["phase"] in phases]
    scores = [
        (float(r["selection_map50"] or -1), float(r["selection_map50_95"] or -1)) for r in rows
    ]
    return best_so_far([(-1.0, -1.0), *scores])  # before the first epoch: no score


def scaled_rate_adam(schedule, slower: list, scale: float, ema_momentum: float = 0.0):
    """Adam whose steps on the ``slower`` variables (the pretrained encoder's) use ``scale``
    times the learning rate: Keras 3 has no per-variable rates, and scaling their gradients
    would not do it (Adam's steps do not depend on the gradients' scale).

    ``ema_momentum`` > 0 keeps Keras' moving average of the weights; :class:`AveragedWeights`
    puts it into the model at every epoch's end, so the average is there when training ends
    and Keras' final overwrite (with what is then the raw weights) is skipped."""

    class ScaledRateAdam(keras.optimizers.Adam):
        def build(self, variables) -> None:
            super().build(variables)
            self._slower = {self._var_key(variable) for variable in slower}

        def update_step(self, gradient, variable, learning_rate):
            if self._var_key(variable) in self._slower:
                learning_rate = learning_rate * scale
            super().update_step(gradient, variable, learning_rate)

        def finalize_variable_values(self, var_list) -> None:
            pass  # the averaged weights are in the model already (AveragedWeights)

    return ScaledRateAdam(
        schedule, global_clipnorm=10.0, use_ema=ema_momentum > 0, ema_momentum=ema_momentum
    )
