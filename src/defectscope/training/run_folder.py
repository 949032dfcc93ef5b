"""A training run folder and its typed state (``state.json``), in the manner of Ultralytics::

runs/NAME/
  config.yaml  state.json  results.csv  training_curves.png  logs/ (TensorBoard)
  weights/best.keras  weights/last.keras  weights/metadata.json  weights/head.weights.h5
  backup/      (Keras BackupAndRestore while fine-tuning; removed at the end)
  evaluation/  metrics.json  confusion_matrix.png  report.md  misclassified.{csv,png}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path

from defectscope.core.atomic_io import atomic_write_json
from defectscope.core.errors import RunFolderError
from defectscope.training.checks import check_new_run_folder
from defectscope.training.config import TrainConfig, load_config, save_config


class Stage(StrEnum):
    """How far a run got: each stage is written once its files are complete."""

    CREATED = "created"  # config.yaml written
    HEAD_DONE = "head_done"  # phase 1 finished (a detector: its features are cached)
    HEADS_TRAINED = "heads_trained"  # a detector's heads trained; its whole-detector epochs next
    TRAINED = "trained"  # a detector's epochs finished: best and last.keras saved, undecoded
    DONE = "done"  # both phases and the final evaluation finished


@dataclass
class RunState:
    """``state.json``: the stage reached and the figures measured on the way."""

    stage: Stage = Stage.CREATED
    head_selection_accuracy: float | None = None  # phase 1, on the selection set (chooses)
    head_selection_xent: float | None = None  # its cross-entropy there (breaks accuracy ties)
    head_validation_accuracy: float | None = None  # phase 1, on the validation split (measured)
    class_weights: list[float] | None = None
    feature_seconds: float = 0.0  # time of the backbone pass that filled the feature cache
    head_epoch_seconds: float = 0.0
    head_speedup: float | None = None  # a cached head epoch against backbone passes over it
    val_accuracy: float | None = None  # final evaluation, on the validation split
    val_map50: float | None = None  # a detector's final evaluation, on the validation split
    train_seconds: float | None = None
    budget_epochs: int | None = None  # detect.time_minutes: the epochs that fit, last counted
    budget_seconds: float = 0.0  # and the run's time spent then (a resumed run goes on from it)
    # a detector's selection evaluation from cached features, as the heads' last one took: the
    # end's choices make several (detect.time_minutes estimates the end from it)
    selection_seconds: float | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "stage": self.stage.value}

    @classmethod
    def from_dict(cls, values: dict) -> RunState:
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        kept["stage"] = Stage(values.get("stage", Stage.CREATED.value))
        return cls(**kept)


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run and its state; no TensorFlow."""

    root: Path

    config_file = property(lambda self: self.root / "config.yaml")
    state_file = property(lambda self: self.root / "state.json")
    results_file = property(lambda self: self.root / "results.csv")
    curves_file = property(lambda self: self.root / "training_curves.png")
    weights_dir = property(lambda self: self.root / "weights")
    best_model = property(lambda self: self.root / "weights" / "best.keras")
    last_model = property(lambda self: self.root / "weights" / "last.keras")
    head_weights = property(lambda self: self.root / "weights" / "head.weights.h5")
    backup_dir = property(lambda self: self.root / "backup")
    logs_dir = property(lambda self: self.root / "logs")
    evaluation_dir = property(lambda self: self.root / "evaluation")

    @classmethod
    def create(cls, config: TrainConfig) -> RunFolder:
        """A new run folder holding the resolved ``config.yaml``; refuses a non-empty folder."""
        root = Path(config.out)
        check_new_run_folder(root)
        run = cls(root)
        run.weights_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run.config_file)
        run.write_state(RunState())
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder, for ``--resume``."""
        run = cls(Path(path))
        if not run.config_file.is_file():
            raise RunFolderError(f"{path}: no config.yaml; not a run folder, nothing to resume")
        return run

    def read_config(self) -> TrainConfig:
        return load_config(self.config_file)

    def read_state(self) -> RunState:
        if not self.state_file.is_file():
            return RunState()
        try:
            return RunState.from_dict(json.loads(self.state_file.read_text()))
        except (ValueError, TypeError) as err:
            raise RunFolderError(f"{self.state_file}: unreadable run state ({err})") from None

    def write_state(self, state: RunState) -> RunState:
        atomic_write_json(self.state_file, state.to_dict())
        return state

    def update_state(self, **changes) -> RunState:
        state = self.read_state()
        for name, value in changes.items():
            setattr(state, name, value)
        return self.write_state(state)

    def backup_epoch(self, part: str = "") -> int:
        """The epoch Keras' ``BackupAndRestore`` will resume from (0 without a backup), of the
        backup folder ``part`` inside the run's (a phase's own) or of the run's."""
        path = self.backup_dir / part / "training_metadata.json"
        try:
            return int(json.loads(path.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return 0
