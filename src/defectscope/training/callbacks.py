"""Keras callbacks of a run: ``results.csv`` rows, per-epoch log lines, the best checkpoint."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from defectscope.core.atomic_io import atomic_path, atomic_write_text
from defectscope.core.errors import TrainingDivergedError

log = logging.getLogger("defectscope.train")
RESULT_COLUMNS = (
    "phase",
    "epoch",
    "loss",
    "accuracy",
    "selection_loss",
    "selection_accuracy",
    "selection_xent",
    "selection_map50",  # detection runs: COCO mAP of the selection set
    "selection_map50_95",
    "learning_rate",
    "seconds",
)


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:  # rows of older runs lack the newer columns
        return [{k: v or "" for k, v in row.items()} for row in csv.DictReader(handle)]


def current_learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class ResultsLog(keras.callbacks.Callback):
    """Appends one row per epoch to ``results.csv`` (rewritten atomically) and logs a line.

    On resume, rows of this phase from the epoch being redone onwards are replaced.
    """

    def __init__(
        self,
        path: Path,
        phase: str,
        total_epochs: int,
        quiet_epochs: int = 1,
        announce: bool = True,
    ) -> None:
        super().__init__()
        self.path, self.phase, self.total = path, phase, total_epochs
        self.quiet_epochs = max(1, quiet_epochs)  # log every n-th epoch (head epochs are many)
        self.announce = announce  # False beside Keras' progress bar, which shows the epoch
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row = {
            "phase": self.phase,
            "epoch": epoch + 1,
            "loss": logs.get("loss", ""),
            "accuracy": logs.get("accuracy", ""),
            "selection_loss": logs.get("val_loss", ""),  # Keras' validation_data: selection
            "selection_accuracy": logs.get("val_accuracy", ""),
            "selection_xent": logs.get("val_xent", ""),
            "selection_map50": logs.get("val_map50", ""),
            "selection_map50_95": logs.get("val_map50_95", ""),
            "learning_rate": current_learning_rate(self.model),
            "seconds": round(time.perf_counter() - self._started, 3),
        }
        rows = [
            r
            for r in read_results(self.path)
            if not (r["phase"] == self.phase and int(r["epoch"]) >= epoch + 1)
        ]
        rows.append({k: str(v) for k, v in row.items()})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())
        if not self.announce or ((epoch + 1) % self.quiet_epochs and epoch + 1 != self.total):
            return
        if row["selection_map50"] != "":
            log.info(
                "%s epoch %d/%d: loss %.4f selection mAP@0.5 %.4f mAP@0.5:0.95 %.4f (%.1f s)",
                self.phase,
                epoch + 1,
                self.total,
                float(row["loss"] or "nan"),
                row["selection_map50"],
                row["selection_map50_95"],
                row["seconds"],
            )
        else:
            log.info(
                "%s epoch %d/%d: loss %.4f acc %.4f selection loss %.4f acc %.4f lr %.2e (%.1f s)",
                self.phase,
                epoch + 1,
                self.total,
                float(row["loss"] or "nan"),
                float(row["accuracy"] or "nan"),
                float(row["selection_loss"] or "nan"),
                float(row["selection_accuracy"] or "nan"),
                row["learning_rate"],
                row["seconds"],
            )


Score = tuple[float, int, float]  # (selection accuracy, phase, -cross-entropy): higher wins
HEAD_PHASE, FINETUNE_PHASE = 0, 1
NO_SCORE: Score = (-1.0, -1, -np.inf)


def selection_score(logs: dict | None, phase: int = FINETUNE_PHASE) -> Score:
    """How good an epoch is on the selection set. Accuracy first. A small selection set often
    saturates (every model gets it all right); then a fine-tuned epoch beats the head, whose
    frozen features make it surer (lower cross-entropy) but generalise less (measured on
    NEU-DET: head 98.1% on validation), and among epochs of one phase the lower unsmoothed
    cross-entropy wins."""
    logs = logs or {}
    accuracy = float(logs.get("val_accuracy", -1.0))
    return accuracy, phase, -float(logs.get("val_xent", np.inf))


def score_of_row(row: dict[str, str]) -> Score:
    logs = {
        "val_accuracy": row["selection_accuracy"],
        "val_xent": row.get("selection_xent") or "inf",
    }
    return selection_score(logs, HEAD_PHASE if row["phase"] == "head" else FINETUNE_PHASE)


class KeepBest(keras.callbacks.Callback):
    """Keeps, in memory, the weights of the epoch with the best :func:`selection_score` and
    puts them back when training ends (phase 1's head)."""

    def __init__(self) -> None:
        super().__init__()
        self.best: Score = NO_SCORE
        self.weights = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        score = selection_score(logs, HEAD_PHASE)
        if score > self.best:
            self.best, self.weights = score, self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


def save_for_inference(model, path: Path) -> None:
    """Save ``model`` atomically without its optimizer state (a third of the file when Adam
    is attached): what predict, evaluate and export need. Resuming uses the backup instead."""
    clone = keras.Model.from_config(model.get_config())  # clone_model would compile it again
    clone.set_weights(model.get_weights())
    with atomic_path(path) as temp:
        clone.save(temp)


class StepProgress(keras.callbacks.Callback):
    """A log line every ``every_seconds`` within an epoch, for log files (no progress bar)."""

    def __init__(self, phase: str, total_epochs: int, every_seconds: float = 60.0) -> None:
        super().__init__()
        self.phase, self.total, self.every = phase, total_epochs, every_seconds
        self.epoch, self.last = 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.last = epoch, time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        steps = self.params.get("steps") or "?"
        loss = float((logs or {}).get("loss", float("nan")))
        log.info(
            "%s epoch %d/%d: step %d/%s, loss %.4f",
            self.phase,
            self.epoch + 1,
            self.total,
            batch + 1,
            steps,
            loss,
        )


class StopOnDivergence(keras.callbacks.Callback):
    """Stops a run with :class:`TrainingDivergedError` at the first step whose loss is NaN or
    infinite. Keras' TerminateOnNaN stops quietly, and the run would then evaluate, export and
    report its diverged weights; here the checkpoints and the backup of the last finished epoch
    stay as they were."""

    def __init__(
        self, phase: str, section: str, learning_rate: float, rate_name: str = "learning_rate"
    ) -> None:
        super().__init__()
        self.phase, self.section, self.rate = phase, section, learning_rate
        self.rate_name = rate_name  # the setting named in the error, within ``section``
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"{self.phase} epoch {self.epoch + 1}, step {batch + 1}: the training loss is "
                f"{loss}; the weights diverged and the run stopped. Try a lower "
                f"{self.section}.{self.rate_name} (now {self.rate:g}) in a --config file"
            )


def best_so_far(scores: list) -> tuple:
    """The best of ``scores`` (a run's starting point, then its epochs in order) and how many
    epochs came after its first occurrence: a resumed run goes on counting towards early
    stopping (only a better score resets the count)."""
    best = max(scores)
    return best, len(scores) - 1 - scores.index(best)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model atomically when its selection score passes the best so far; stops early
    after ``patience`` epochs without a better one (0: never).

    ``best`` starts from earlier results (phase 1, or epochs before a resume), so a resumed run
    never overwrites a better checkpoint; ``wait`` counts the epochs run since (see
    :func:`best_so_far`). The score is :func:`selection_score`; a subclass scores, saves and
    describes otherwise by overriding :meth:`score`, :meth:`save` and :meth:`describe`.
    """

    saved = "checkpoint"  # what the log line calls the saved model

    def __init__(
        self,
        path: Path,
        best: tuple = NO_SCORE,
        patience: int = 0,
        write: bool = True,
        wait: int = 0,
    ) -> None:
        super().__init__()
        self.path, self.best, self.patience, self.wait = path, best, patience, wait
        self.write = write  # False on non-chief workers: same decisions, no file

    def score(self, logs: dict | None) -> tuple:
        return selection_score(logs)

    def save(self) -> None:
        save_for_inference(self.model, self.path)

    def describe(self, score: tuple) -> str:
        return f"selection accuracy {score[0]:.4f}, cross-entropy {-score[2]:.4f}"

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        score = self.score(logs)
        if score > self.best:
            self.best, self.wait = score, 0
            if self.write:
                self.save()
                log.info("best %s: %s -> %s", self.saved, self.describe(score), self.path)
            return
        self.wait += 1
        if self.patience and self.wait >= self.patience:
            log.info("early stop: no better selection score for %d epochs", self.wait)
            self.model.stop_training = True


class EpochRandomState(keras.callbacks.Callback):
    """Sets the model's random-number states (dropout) from the epoch at each epoch's start.

    Keras does not save those states with the weights, so without this an epoch redone after
    ``--resume`` would draw other dropout masks than the epoch the kill interrupted.
    """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pending = list(self.model.layers)
        while pending:
            layer = pending.pop()
            pending.extend(getattr(layer, "layers", []))
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                state = keras.ops.convert_to_numpy(generator.state)
                state[1] = epoch << 20  # the counter; [0] is the layer's own seed
                generator.state.assign(state)


class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras ``BackupAndRestore`` that only the chief writes; every worker restores from it.

    In a cluster the run folder must be on storage all workers see, so that a restarted
    worker resumes from the same epoch as the chief.
    """

    def __init__(self, backup_dir: str, write: bool = True) -> None:
        super().__init__(backup_dir, double_checkpoint=True)
        self.write = write

    def _save_model(self) -> None:
        if self.write:
            super()._save_model()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.write:  # the chief removes the backup once training is over
            super().on_train_end(logs)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Before each validation of a backbone trained from random weights, its BatchNormalization
    statistics are recomputed as the plain average over ``batches`` un-augmented training
    batches. Moving averages lag weights that change fast: on the synthetic demo set (180
    images, 5 epochs) the model scored 46% with batch statistics and 17% (chance) with the
    lagging moving ones. Pretrained backbones keep ImageNet's statistics and need none of this.
    """

    def __init__(self, images, batches: int = 8) -> None:
        super().__init__()
        self.images, self.batches = images, batches

    def on_test_begin(self, logs: dict | None = None) -> None:
        norms = [
            layer
            for layer in self.model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
        ]
        if not norms:
            return
        kept = [norm.momentum for norm in norms]
        for count, batch in enumerate(self.images.take(self.batches)):
            for norm in norms:  # moving = running mean of the batch statistics so far
                norm.momentum = count / (count + 1)
            self.model(batch, training=True)
        for norm, momentum in zip(norms, kept, strict=True):
            norm.momentum = momentum


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras' ``SwapEMAWeights(swap_on_epoch=True)`` for an optimizer with ``use_ema``: from
    each epoch's end to the next epoch's start the model holds the moving average of its
    weights, so the callbacks after this one (selection score, best checkpoint, backup) see and
    save the average while training goes on from the raw weights. ``resumed``: the run restarts
    from a backup written at an epoch's end, i.e. with the average in the model and the raw
    weights in the optimizer's slots, which the first epoch's start swaps back.

    The swap copies values: Keras' TensorFlow swap adds and subtracts them, which rounds, so
    the raw weights came back changed in their last bits and training took another path than
    the same run without the average (NEU-DET: another loss from the second epoch on)."""

    def __init__(self, resumed: bool) -> None:
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed

    def _swap_variables(self) -> None:
        self._apply_to_ema_optimizers(self._backend_swap_variables, self._backend_swap_variables)
