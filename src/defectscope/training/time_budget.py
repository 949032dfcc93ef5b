"""``detect.time_minutes``: a detector's whole run within a time budget.

After every epoch the epochs that still fit are counted from the mean epoch so far, the time
the run has spent (records, features, epochs, and the earlier processes of a resumed run) and
an estimate of what its end takes (choosing the decoding on the selection set, evaluating the
validation split); training stops when no further epoch fits. At least one epoch runs, so a
budget spent before it still leaves a detector. The learning-rate schedule stays the one of
``detect.epochs``: unlike Ultralytics' ``time=``, which shortens its schedule to the epochs that
fit, because on NEU-DET the shortened cosine lost (selection mAP@0.5 0.360 against 0.424 for the
same hour, docs/detection.md). With ``detect.finetune_epochs`` the heads' budget keeps the time
of the whole detector's epochs (:func:`finetune_reserve`), which have a budget of their own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from defectscope.training.detect_finetune import finetune_steps, tuned_encoder_layers
from defectscope.training.run_folder import RunFolder

log = logging.getLogger("defectscope.train")

# The end's work counted in selection evaluations (raw outputs, decoding, COCO mAP of the
# selection set): the raw outputs again, decoded at four NMS thresholds, two mirrored views
# and their average; plus loading and saving the detector and drawing the evaluation's pictures.
END_SELECTION_EVALUATIONS = 8
END_FIXED_SECONDS = 30.0
# after those epochs the selection images' features are computed again: plain and two mirrors
RECOMPUTED_SELECTION_COPIES = 3


def encoder_seconds_per_image(detector, batch_size: int = 8, repeats: int = 3) -> float:
    """The image encoder's time per image at the detector's input size: the fastest of
    ``repeats`` timed batches (:func:`fastest_seconds`)."""
    encoder = detector.backbone.image_encoder
    size = int(encoder.image_size)
    images = np.zeros((batch_size, size, size, 3), np.float32)
    return fastest_seconds(lambda: encoder.predict_on_batch(images), repeats) / batch_size


def encoder_training_seconds_per_image(detector, batch_size: int, repeats: int = 2) -> float:
    """The encoder's forward and backward pass per image as the whole detector's epochs
    train it (inference mode, a gradient for each weight of :func:`tuned_encoder_layers`): the
    fastest of ``repeats`` batches of ``batch_size`` (:func:`fastest_seconds`). The weights
    are read, never changed, whatever they are set to train."""
    encoder = detector.backbone.image_encoder
    weights = [weight.value for layer in tuned_encoder_layers(encoder) for weight in layer.weights]

    @tf.function
    def gradients(images):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(weights)
            outputs = tf.nest.flatten(encoder(images, training=False))
            total = tf.add_n([tf.reduce_sum(output) for output in outputs])
        return tape.gradient(total, weights)

    size = int(encoder.image_size)
    images = tf.zeros((batch_size, size, size, 3), tf.float32)
    return fastest_seconds(lambda: gradients(images), repeats) / batch_size


def fastest_seconds(work: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``work`` after an untimed one (which builds
    its graph), so that a moment of other work on the host does not inflate it."""
    work()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


@dataclass(frozen=True)
class RunClock:
    """The time a run has spent: ``before``, what its earlier processes spent (``state.json``'s
    ``budget_seconds`` when this process started), and this process's time since ``started``
    (``time.perf_counter()``). Read once per process: the budget's own writes of
    ``budget_seconds`` already include this process's time."""

    started: float
    before: float = 0.0

    @classmethod
    def of(cls, run: RunFolder, started: float) -> RunClock:
        return cls(started, run.read_state().budget_seconds)

    def spent(self) -> float:
        return self.before + time.perf_counter() - self.started


@dataclass
class BudgetTiming:
    """What both phases' ``detect.time_minutes`` budgets read: the validation split's size,
    the run's clock (one per process) and the encoder's seconds per image, timed once: its
    forward pass, and its forward and backward passes when the whole detector trains."""

    validation_count: int
    clock: RunClock
    encoder: float | None = None
    encoder_training: float | None = None

    def encoder_seconds(self, detector) -> float:
        if self.encoder is None:
            self.encoder = encoder_seconds_per_image(detector)
            log.info("time budget: the encoder takes %.1f ms per image", 1000 * self.encoder)
        return self.encoder

    def encoder_training_seconds(self, detector, batch_size: int) -> float:
        if self.encoder_training is None:
            self.encoder_training = encoder_training_seconds_per_image(detector, batch_size)
            log.info(
                "time budget: training the encoder takes %.1f ms per image",
                1000 * self.encoder_training,
            )
        return self.encoder_training

    def finetune_reserve(
        self, detector, phase, fit_count: int, selection_count: int
    ) -> Callable[[float], float]:
        """The heads' budget's reserve for ``phase.finetune_epochs`` of the whole detector
        (:func:`finetune_reserve`), its encoder's training timed at those epochs' batch size;
        nothing timed without them."""
        if not phase.finetune_epochs:
            return lambda mean_heads_epoch: 0.0
        batch = finetune_steps(fit_count, phase.batch_size)[0]
        training = self.encoder_training_seconds(detector, batch)
        encoder = self.encoder_seconds(detector)
        return finetune_reserve(
            phase.finetune_epochs, fit_count, selection_count, encoder, training
        )


def end_seconds(
    selection_seconds: float, selection_count: int, validation_count: int, encoder_seconds: float
) -> float:
    """What a run's end should take: the decoding chosen on the selection set (in selection
    evaluations of ``selection_seconds``), then the validation split through the whole
    detector (encoder and heads, per image)."""
    heads_per_image = selection_seconds / max(1, selection_count)
    validation = validation_count * (encoder_seconds + heads_per_image)
    return END_FIXED_SECONDS + END_SELECTION_EVALUATIONS * selection_seconds + validation


def finetune_reserve(
    finetune_epochs: int,
    fit_count: int,
    selection_count: int,
    encoder_seconds: float,
    encoder_training_seconds: float,
) -> Callable[[float], float]:
    """Seconds the whole detector's epochs will take (the heads' budget keeps them), each a
    heads epoch (the mean so far) and the encoder trained on every fit image, and the
    selection features computed again after them."""

    def reserve(mean_heads_epoch: float) -> float:
        if not finetune_epochs:
            return 0.0
        encoder = encoder_training_seconds * fit_count
        return finetune_epochs * (mean_heads_epoch + encoder) + after_finetune(
            selection_count, encoder_seconds
        )

    return reserve


def after_finetune(selection_count: int, encoder_seconds: float) -> float:
    """The selection features computed again with the tuned encoder, for the end's choices."""
    return RECOMPUTED_SELECTION_COPIES * selection_count * encoder_seconds


class TimeBudget(keras.callbacks.Callback):
    """After each epoch: the epochs that fit in ``seconds`` (``spent()`` so far, the mean
    epoch of this process, ``end_estimate(mean_epoch)`` kept for what follows the epochs);
    training stops when this one is the last. The count and the time spent go into the run's
    state (a resumed run's clock goes on from there)."""

    def __init__(
        self,
        *,
        seconds: float,
        spent: Callable[[], float],
        end_estimate: Callable[[float], float],
        max_epochs: int,
        run: RunFolder,
        on_total: Callable[[int], None] = lambda total: None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__()
        self.clock = clock  # times the epochs
        self.seconds, self.spent, self.end_estimate = seconds, spent, end_estimate
        self.max_epochs = max_epochs
        self.run, self.on_total = run, on_total
        self.durations: list[float] = []
        self.total: int | None = None  # the epoch count last logged
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = self.clock()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.durations.append(self.clock() - self._started)
        mean_epoch = float(np.mean(self.durations))
        done, spent, end = epoch + 1, self.spent(), self.end_estimate(mean_epoch)
        total = epochs_that_fit(done, mean_epoch, self.seconds - spent - end, self.max_epochs)
        if total != self.total:
            log.info(
                "time budget: %d epochs fit (%.1f of %.1f min spent, epochs of %.0f s, about "
                "%.1f min kept for what follows them)",
                total,
                spent / 60,
                self.seconds / 60,
                mean_epoch,
                end / 60,
            )
        self.total = total
        self.on_total(total)
        self.run.update_state(budget_epochs=total, budget_seconds=spent)
        if total <= done:
            self.model.stop_training = True
            log.info(
                "time budget (detect.time_minutes %.1f): stopping after epoch %d, %.1f min "
                "spent; what follows should take about %.1f min",
                self.seconds / 60,
                done,
                spent / 60,
                end / 60,
            )


def epochs_that_fit(done: int, mean_epoch: float, seconds_left: float, max_epochs: int) -> int:
    """The epoch count once ``done`` epochs ran and ``seconds_left`` remain for more of about
    ``mean_epoch`` seconds each: ``done`` at least, ``max_epochs`` at most."""
    more = math.floor(seconds_left / mean_epoch) if seconds_left > 0 and mean_epoch > 0 else 0
    return max(done, min(max_epochs, done + more))


def create_time_budget(
    run: RunFolder,
    phase,
    *,
    encoder_seconds: float,
    selection_map,
    results_log,
    validation_count: int,
    clock: RunClock,
    max_epochs: int | None = None,
    reserve: Callable[[float], float] = lambda mean_epoch: 0.0,
    end_selection_seconds: float | None = None,
) -> TimeBudget:
    """``phase.time_minutes``' callback: ``clock`` tells the time the run has spent, its
    earlier processes included; the end is
    estimated from ``selection_map``'s last evaluation time (``.seconds``, over
    ``.count`` images) and the encoder's time per image; the epoch count it sets is
    the one ``results_log``'s lines show (``.total``). ``reserve(mean_epoch)``: seconds kept
    for later epochs (the heads' budget keeps the whole detector's epochs, ``max_epochs`` of
    the phase being fitted, ``phase.epochs`` by default). ``end_selection_seconds``: the time
    of one of the end's selection evaluations when it is not ``selection_map``'s (the whole
    detector is scored from images, the end's choices from cached features)."""
    seconds = 60 * phase.time_minutes
    spent = clock.spent

    def end_estimate(mean_epoch: float) -> float:
        evaluation = selection_map.seconds
        if end_selection_seconds is not None:
            evaluation = end_selection_seconds
        end = end_seconds(evaluation, selection_map.count, validation_count, encoder_seconds)
        return end + reserve(mean_epoch)

    log.info(
        "time budget: %.1f min for the whole run (detect.time_minutes), %.1f min spent",
        seconds / 60,
        spent() / 60,
    )
    return TimeBudget(
        seconds=seconds,
        spent=spent,
        end_estimate=end_estimate,
        max_epochs=phase.epochs if max_epochs is None else max_epochs,
        run=run,
        on_total=lambda total: setattr(results_log, "total", total),
    )
