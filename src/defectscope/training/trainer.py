"""Two-phase transfer learning: ``train(config)`` starts a run, ``resume(run_dir)`` continues one.

Phase 1 trains the head on cached backbone features (:mod:`~defectscope.training.head`); phase 2
fine-tunes the top blocks (:mod:`~defectscope.training.finetune`); the best checkpoint is then
evaluated by :func:`defectscope.evaluation.evaluate.evaluate`. A run killed at any moment
continues from its last completed epoch with its optimizer state (Keras ``BackupAndRestore``).
The run folder is described in :mod:`~defectscope.training.run_folder`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from defectscope.core.errors import RunFolderError
from defectscope.data.pipeline import DataSource, open_source
from defectscope.evaluation.evaluate import evaluate
from defectscope.evaluation.report import plot_training_curves
from defectscope.inference.classifier import load_model
from defectscope.inference.model_files import write_model_metadata
from defectscope.models.xception import create_model
from defectscope.training.callbacks import read_results
from defectscope.training.config import TrainConfig
from defectscope.training.distribute import (
    DistributeConfig,
    create_strategy,
    is_chief,
    set_precision,
    strategy_name,
    task_label,
)
from defectscope.training.finetune import fine_tune
from defectscope.training.head import skip_head, train_head
from defectscope.training.run_folder import RunFolder, RunState, Stage

log = logging.getLogger("defectscope.train")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict  # the final evaluation; empty on a non-chief worker
    state: RunState
    seconds: float

    @property
    def head_speedup(self) -> float | None:
        return self.state.head_speedup


def train(config: TrainConfig) -> TrainResult:
    """Start a new run in ``config.out``: both phases, then the final evaluation."""
    strategy = create_strategy(config.distribute)  # before any other TensorFlow work
    run = RunFolder.create(config) if is_chief() else RunFolder(Path(config.out))
    return _run(run, config, strategy)


def resume(run_dir: str | Path) -> TrainResult:
    """Continue a killed run from its last completed epoch (a finished run is returned as is)."""
    run = RunFolder.open(run_dir)
    config, state = run.read_config(), run.read_state()
    if state.stage is Stage.DONE and (run.evaluation_dir / "metrics.json").is_file():
        log.info("%s is already complete; nothing to resume", run.root)
        return TrainResult(run.root, _read_metrics(run), state, 0.0)
    log.info("resuming %s", run.root)
    return _run(run, config, create_strategy(config.distribute))


def _read_metrics(run: RunFolder) -> dict:
    return json.loads((run.evaluation_dir / "metrics.json").read_text())


@contextlib.contextmanager
def _precision(config: DistributeConfig) -> Iterator[None]:
    """The run's Keras dtype policy, back to float32 for whatever runs next."""
    set_precision(config)
    if config.mixed_precision != "off" or config.xla:
        log.info(
            "mixed precision %s (softmax in float32), XLA %s",
            config.mixed_precision,
            "on" if config.xla else "off",
        )
    try:
        yield
    finally:
        set_precision(DistributeConfig())


def _open_sources(config: TrainConfig) -> tuple[DataSource, DataSource]:
    train_source = open_source(config.data, config.train_split)
    val_source = open_source(config.data, config.val_split)
    if train_source.classes != val_source.classes:
        raise RunFolderError(
            f"{config.data}: classes differ between {config.train_split} "
            f"{list(train_source.classes)} and {config.val_split} {list(val_source.classes)}"
        )
    return train_source, val_source


def _run(run: RunFolder, config: TrainConfig, strategy) -> TrainResult:
    import keras

    started, chief = time.perf_counter(), is_chief()
    if strategy_name(strategy) != "default":
        log.info(
            "%s: %s strategy, %d replicas, this task %s (%s)",
            run.root,
            strategy_name(strategy),
            strategy.num_replicas_in_sync,
            task_label(),
            "chief" if chief else "worker: writes nothing",
        )
    keras.utils.set_random_seed(config.seed)
    with _precision(config.distribute):
        train_source, val_source = _open_sources(config)
        model = _model_with_head(run, config, strategy, train_source, val_source)
        if config.finetune.epochs > 0 and config.finetune.unfreeze_from != "none":
            fine_tune(model, config, run, train_source, val_source, strategy)
        if not chief:
            log.info("worker %s done; the chief writes the run folder", task_label())
            return TrainResult(run.root, {}, run.read_state(), time.perf_counter() - started)
        model.save(run.last_model)
    return _finish(run, config, val_source, started)


def _model_with_head(
    run: RunFolder, config: TrainConfig, strategy, train: DataSource, val: DataSource
):
    """The model with its phase-1 head: trained now on the chief (the other workers wait for
    it), or loaded when a resumed run has it. Under a strategy it is built in its scope."""
    if is_chief():
        model = create_model(len(train.classes), config.image_size, config.weights, config.dropout)
        write_model_metadata(run.weights_dir, list(train.classes), config.image_size)
        stage = run.read_state().stage
        if stage is Stage.CREATED and config.head.epochs == 0:
            skip_head(model, run)
        elif stage is Stage.CREATED:
            train_head(model, config, run, train, val)
        else:
            model.load_weights(run.head_weights)
            log.info("phase 1 already done (val_acc %s)", run.read_state().head_val_accuracy)
        if strategy_name(strategy) == "default":
            return model
    else:
        _wait_for_head(run)
    pretrained = str(config.weights).lower() != "none"
    with strategy.scope():
        model = create_model(
            len(train.classes), config.image_size, "none", config.dropout, pretrained
        )
    model.load_weights(run.head_weights)
    return model


def _wait_for_head(run: RunFolder, timeout_s: float = 6 * 3600) -> None:
    """A non-chief worker waits until the chief has trained (and saved) the head."""
    deadline = time.monotonic() + timeout_s
    while run.read_state().stage is Stage.CREATED:
        if time.monotonic() > deadline:
            raise RunFolderError(f"{run.root}: no head weights from the chief in {timeout_s:.0f} s")
        time.sleep(2)


def _finish(run: RunFolder, config: TrainConfig, val: DataSource, started: float) -> TrainResult:
    """Curves, the evaluation of the best checkpoint, and the final state."""
    plot_training_curves(read_results(run.results_file), run.curves_file)
    title = f"{run.root.name}: {config.val_split} split"
    metrics = evaluate(load_model(run.root), val, out=run.evaluation_dir, title=title)
    shutil.rmtree(run.backup_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    state = run.update_state(
        stage=Stage.DONE, val_accuracy=metrics["accuracy"], train_seconds=seconds
    )
    log.info(
        "done in %.1f min: %s accuracy %.4f (%d/%d), macro F1 %.4f -> %s",
        seconds / 60,
        config.val_split,
        metrics["accuracy"],
        metrics["num_images"] - metrics["num_errors"],
        metrics["num_images"],
        metrics["macro_f1"],
        run.evaluation_dir,
    )
    return TrainResult(run.root, metrics, state, seconds)
