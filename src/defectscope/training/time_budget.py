"""``detect.time_minutes``: a detector's whole run within a time budget.

After every epoch the epochs that still fit are counted from the mean epoch so far, the time
the run has spent (records, features, epochs, and the earlier processes of a resumed run) and
an estimate of what its end takes (choosing the decoding on the selection set, evaluating the
validation split); training stops when no further epoch fits. At least one epoch runs, so a
budget spent before it still leaves a detector. The learning-rate schedule stays the one of
``detect.epochs``: unlike Ultralytics' ``time=``, which shortens its schedule to the epochs that
fit, because on NEU-DET the shortened cosine lost (selection mAP@0.5 0.360 against 0.424 for the
same hour, docs/detection.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import keras
import numpy as np

from defectscope.training.run_folder import RunFolder

log = logging.getLogger("defectscope.train")

# The end's work counted in selection evaluations (raw outputs, decoding, COCO mAP of the
# selection set): the raw outputs again, decoded at four NMS thresholds, two mirrored views
# and their average; plus loading and saving the detector and drawing the evaluation's pictures.
END_SELECTION_EVALUATIONS = 8
END_FIXED_SECONDS = 30.0


def encoder_seconds_per_image(detector, batch_size: int = 8) -> float:
    """The image encoder's time per image at the detector's input size, timed on one batch
    after an untimed one (which builds the graph)."""
    encoder = detector.backbone.image_encoder
    size = int(encoder.image_size)
    images = np.zeros((batch_size, size, size, 3), np.float32)
    encoder.predict_on_batch(images)
    started = time.perf_counter()
    encoder.predict_on_batch(images)
    return (time.perf_counter() - started) / batch_size


def end_seconds(
    selection_seconds: float, selection_count: int, validation_count: int, encoder_seconds: float
) -> float:
    """What a run's end should take: the decoding chosen on the selection set (in selection
    evaluations of ``selection_seconds``), then the validation split through the whole
    detector (encoder and heads, per image)."""
    heads_per_image = selection_seconds / max(1, selection_count)
    validation = validation_count * (encoder_seconds + heads_per_image)
    return END_FIXED_SECONDS + END_SELECTION_EVALUATIONS * selection_seconds + validation


class TimeBudget(keras.callbacks.Callback):
    """After each epoch: the epochs that fit in ``seconds`` (``spent()`` so far, the mean
    epoch of this process, ``end_estimate()`` kept for the end); training stops when this one
    is the last. The count and the time spent go into the run's state (a resumed run's clock
    goes on from there)."""

    def __init__(
        self,
        *,
        seconds: float,
        spent: Callable[[], float],
        end_estimate: Callable[[], float],
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
        done, spent, end = epoch + 1, self.spent(), self.end_estimate()
        mean_epoch = float(np.mean(self.durations))
        total = epochs_that_fit(done, mean_epoch, self.seconds - spent - end, self.max_epochs)
        if total != self.total:
            log.info(
                "time budget: %d epochs fit (%.1f of %.1f min spent, epochs of %.0f s, about "
                "%.1f min kept for the end)",
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
                "spent; the end should take about %.1f min",
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
    started: float,
) -> TimeBudget:
    """``phase.time_minutes``' callback: its clock goes on from the time earlier processes of
    the run spent (``started``: this one's ``time.perf_counter()`` at its start); the end is
    estimated from ``selection_map``'s last evaluation time (``.seconds``, over
    ``.selection.count`` images) and the encoder's time per image; the epoch count it sets is
    the one ``results_log``'s lines show (``.total``)."""
    seconds = 60 * phase.time_minutes
    before = run.read_state().budget_seconds

    def spent() -> float:
        return before + time.perf_counter() - started

    def end_estimate() -> float:
        return end_seconds(
            selection_map.seconds, selection_map.selection.count, validation_count, encoder_seconds
        )

    log.info(
        "time budget: %.1f min for the whole run (detect.time_minutes), %.1f min spent",
        seconds / 60,
        spent() / 60,
    )
    return TimeBudget(
        seconds=seconds,
        spent=spent,
        end_estimate=end_estimate,
        max_epochs=phase.epochs,
        run=run,
        on_total=lambda total: setattr(results_log, "total", total),
    )
