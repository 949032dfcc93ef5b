"""Keras callbacks of a run: ``results.csv`` rows, per-epoch log lines, the best checkpoint."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import keras

from defectscope.core.atomic_io import atomic_path, atomic_write_text

log = logging.getLogger("defectscope.train")
RESULT_COLUMNS = (
    "phase",
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def current_learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class ResultsLog(keras.callbacks.Callback):
    """Appends one row per epoch to ``results.csv`` (rewritten atomically) and logs a line.

    On resume, rows of this phase from the epoch being redone onwards are replaced.
    """

    def __init__(self, path: Path, phase: str, total_epochs: int, quiet_epochs: int = 1) -> None:
        super().__init__()
        self.path, self.phase, self.total = path, phase, total_epochs
        self.quiet_epochs = max(1, quiet_epochs)  # log every n-th epoch (head epochs are many)
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
            "val_loss": logs.get("val_loss", ""),
            "val_accuracy": logs.get("val_accuracy", ""),
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
        if (epoch + 1) % self.quiet_epochs == 0 or epoch + 1 == self.total:
            log.info(
                "%s epoch %d/%d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f lr %.2e (%.1f s)",
                self.phase,
                epoch + 1,
                self.total,
                float(row["loss"] or "nan"),
                float(row["accuracy"] or "nan"),
                float(row["val_loss"] or "nan"),
                float(row["val_accuracy"] or "nan"),
                row["learning_rate"],
                row["seconds"],
            )


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model atomically when validation accuracy reaches the best so far; stops early.

    ``best`` starts from earlier results (phase 1, or epochs before a resume), so a resumed run
    never overwrites a better checkpoint.
    """

    def __init__(
        self, path: Path, best: float = -1.0, patience: int = 0, write: bool = True
    ) -> None:
        super().__init__()
        self.path, self.best, self.patience, self.wait = path, best, patience, 0
        self.write = write  # False on non-chief workers: same decisions, no file

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        accuracy = float((logs or {}).get("val_accuracy", -1.0))
        if accuracy >= self.best:
            self.best, self.wait = accuracy, 0
            if not self.write:
                return
            with atomic_path(self.path) as temp:
                self.model.save(temp)
            log.info("best checkpoint: val_acc %.4f -> %s", accuracy, self.path)
            return
        self.wait += 1
        if self.patience and self.wait >= self.patience:
            log.info("early stop: no better val_acc for %d epochs", self.wait)
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
