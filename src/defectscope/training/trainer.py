"""Two-phase transfer learning: the head on cached features, then fine-tuning of the top blocks.

Run folder (``config.out``)::

    config.yaml  state.json  results.csv  training_curves.png  logs/ (TensorBoard)
    weights/best.keras  weights/last.keras  weights/metadata.json  weights/head.weights.h5
    evaluation/  metrics.json  confusion_matrix.png  report.md  misclassified.{csv,png}

``train(config, resume=True)`` continues a killed run from its last completed epoch, with the
optimizer state (Keras ``BackupAndRestore``).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectscope.atomic_io import atomic_write_json
from defectscope.data.pipeline import DataSource, open_source
from defectscope.inference.classifier import load_model, write_model_metadata
from defectscope.training.config import TrainConfig, load_config, save_config

log = logging.getLogger("defectscope.train")


class RunFolderError(ValueError):
    """A run folder that cannot be started or resumed."""


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    head_speedup: float
    seconds: float


def _state(run: Path) -> dict:
    path = run / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _set_state(run: Path, **values) -> dict:
    state = {**_state(run), **values}
    atomic_write_json(run / "state.json", state)
    return state


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced weights when asked, or in ``auto`` mode when class sizes differ by > 10%."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    if mode == "none" or (mode == "auto" and counts.max() <= 1.1 * max(counts.min(), 1)):
        return None
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def _fit_verbosity() -> int:
    return 1 if sys.stderr.isatty() else 0  # a progress bar on a terminal, log lines otherwise


def _create_run(config: TrainConfig) -> Path:
    """A new, empty run folder holding the resolved ``config.yaml``."""
    run = Path(config.out)
    if run.exists() and any(run.iterdir()):
        raise RunFolderError(
            f"{run}: run folder exists and is not empty; use --resume {run} or another --out"
        )
    (run / "weights").mkdir(parents=True, exist_ok=True)
    save_config(config, run / "config.yaml")
    return run


def _train_head(model, config: TrainConfig, run: Path, train: DataSource, val: DataSource) -> float:
    """Phase 1 on cached features; returns the speed-up over running the backbone each epoch."""
    import keras

    from defectscope.models.xception import create_feature_extractor, create_head_model
    from defectscope.training.callbacks import ResultsLog
    from defectscope.training.features import cached_features

    cache_dir = Path(config.feature_cache or run.parent / ".feature-cache")
    extractor = create_feature_extractor(model)
    cached = [
        cached_features(extractor, source, config.weights, config.image_size, cache_dir)
        for source in (train, val)
    ]
    (x_train, y_train), (x_val, y_val) = ((c.features, c.labels) for c in cached)
    head = create_head_model(model)
    head.compile(
        optimizer=keras.optimizers.Adam(config.head.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    results = ResultsLog(run / "results.csv", "head", config.head.epochs, quiet_epochs=10)
    keep_best = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=config.head.epochs, restore_best_weights=True
    )
    weights = class_weights(y_train, len(train.classes), config.class_weights)
    if weights:
        log.info("classes are imbalanced; class weights %s", weights)
    started = time.perf_counter()
    head.fit(
        x_train,
        y_train,
        batch_size=config.head.batch_size,
        epochs=config.head.epochs,
        validation_data=(x_val, y_val),
        class_weight=weights,
        callbacks=[results, keep_best],
        verbose=0,
    )
    epoch_seconds = (time.perf_counter() - started) / max(config.head.epochs, 1)
    extraction = cached[0].seconds
    speedup = (extraction + epoch_seconds) / epoch_seconds if extraction else float("nan")
    val_accuracy = float(head.evaluate(x_val, y_val, verbose=0)[1])
    log.info(
        "head: val_acc %.4f; %.2f s per epoch on cached features%s",
        val_accuracy,
        epoch_seconds,
        f" vs {extraction:.0f} s for one backbone pass over train ({speedup:.0f}x)"
        if extraction
        else " (features read from the cache)",
    )
    model.save_weights(run / "weights" / "head.weights.h5")
    model.save(run / "weights" / "best.keras")
    _set_state(
        run,
        head_done=True,
        head_val_accuracy=val_accuracy,
        head_epoch_seconds=epoch_seconds,
        feature_seconds=extraction,
        head_speedup=speedup,
        class_weights=[weights[i] for i in sorted(weights)] if weights else None,
    )
    return speedup


def _backup_epoch(run: Path) -> int:
    """The epoch ``BackupAndRestore`` will resume from (0 when there is no backup)."""
    path = run / "backup" / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _fine_tune(
    model, config: TrainConfig, run: Path, train: DataSource, val: DataSource, strategy
) -> None:
    """Phase 2: top blocks trainable, augmentation, cosine schedule, best checkpoint, resumable.

    Under a tf.distribute strategy the model was built in its scope; every worker runs this,
    only the chief writes.
    """
    import keras

    from defectscope.models.xception import set_trainable_blocks
    from defectscope.training.callbacks import (
        BestCheckpoint,
        ChiefBackupAndRestore,
        EpochRandomState,
        ResultsLog,
        read_results,
    )
    from defectscope.training.distribute import distributed_inputs, is_chief
    from defectscope.training.keras_compat import prepare_multiworker_fit

    phase, chief = config.finetune, is_chief()
    layers = set_trainable_blocks(model, phase.unfreeze_from)
    log.info("fine-tuning from %s: %d backbone layers trainable", phase.unfreeze_from, layers)
    state = _state(run)
    weights = dict(enumerate(state["class_weights"])) if state.get("class_weights") else None
    inputs = distributed_inputs(strategy, config, train, val, weights, _backup_epoch(run))
    learning_rate = phase.learning_rate * (
        inputs.replicas if config.distribute.scale_learning_rate else 1
    )
    if inputs.replicas > 1:
        log.info(
            "%d replicas: global batch %d, peak learning rate %.2e, %d steps per epoch",
            inputs.replicas,
            inputs.global_batch,
            learning_rate,
            inputs.steps_per_epoch,
        )
    steps = inputs.steps_per_epoch
    with strategy.scope():
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=max(1, steps * phase.epochs - int(steps * phase.warmup_epochs)),
            warmup_target=learning_rate,
            warmup_steps=int(steps * phase.warmup_epochs),
        )
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=phase.label_smoothing),
            metrics=["accuracy"],
            jit_compile=config.distribute.xla,
        )
    prepare_multiworker_fit(model, strategy, config.image_size, len(train.classes))
    history = [r for r in read_results(run / "results.csv") if r["phase"] == "finetune"]
    best = max([state.get("head_val_accuracy", -1.0)] + [float(r["val_accuracy"]) for r in history])
    callbacks = [  # results and best first: a kill before the backup only repeats that epoch
        BestCheckpoint(run / "weights" / "best.keras", best, phase.patience, write=chief),
        ChiefBackupAndRestore(str(run / "backup"), write=chief),
        EpochRandomState(),
    ]
    if chief:
        callbacks.insert(0, ResultsLog(run / "results.csv", "finetune", phase.epochs))
        logs = keras.callbacks.TensorBoard(str(run / "logs"), write_graph=False, profile_batch=0)
        callbacks.append(logs)
    model.fit(
        inputs.train,
        validation_data=inputs.val,
        epochs=phase.epochs,
        steps_per_epoch=inputs.steps_per_epoch,
        class_weight=inputs.class_weight,
        callbacks=callbacks,
        verbose=_fit_verbosity() if chief else 0,
    )


def _wait_for_head(run: Path, timeout_s: float = 6 * 3600) -> None:
    """A non-chief worker waits until the chief has trained (and saved) the head."""
    deadline = time.monotonic() + timeout_s
    while not _state(run).get("head_done"):
        if time.monotonic() > deadline:
            raise RunFolderError(f"{run}: the chief wrote no head weights in {timeout_s:.0f} s")
        time.sleep(2)


def _completed(run: Path) -> TrainResult | None:
    metrics_path = run / "evaluation" / "metrics.json"
    if _state(run).get("done") and metrics_path.is_file():
        log.info("%s is already complete; nothing to resume", run)
        metrics = json.loads(metrics_path.read_text())
        return TrainResult(run, metrics, float(_state(run).get("head_speedup", "nan")), 0.0)
    return None


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Run (or resume) both phases, then evaluate the best checkpoint on the validation split.

    Phase 1 runs on the chief alone (it is a matrix product on cached features); phase 2 runs
    under the strategy of ``config.distribute`` on every worker.
    """
    import keras

    from defectscope.evaluation.metrics import predict_source
    from defectscope.evaluation.report import plot_training_curves, write_evaluation
    from defectscope.models.xception import create_model
    from defectscope.training.callbacks import read_results
    from defectscope.training.distribute import (
        DistributeConfig,
        create_strategy,
        is_chief,
        set_precision,
        strategy_name,
        task_label,
    )

    started, chief = time.perf_counter(), is_chief()
    if resume:
        if not (Path(config.out) / "config.yaml").is_file():
            raise RunFolderError(f"{config.out}: no config.yaml; nothing to resume")
        config = load_config(Path(config.out) / "config.yaml")
    strategy = create_strategy(config.distribute)  # before any other TensorFlow work
    run = _create_run(config) if chief and not resume else Path(config.out)
    if resume and (done := _completed(run)) is not None:
        return done
    if resume:
        log.info("resuming %s", run)
    if strategy_name(strategy) != "default":
        log.info(
            "%s: %s strategy, %d replicas, this task %s (%s)",
            run,
            strategy_name(strategy),
            strategy.num_replicas_in_sync,
            task_label(),
            "chief" if chief else "worker: writes nothing",
        )
    keras.utils.set_random_seed(config.seed)
    set_precision(config.distribute)
    if config.distribute.mixed_precision != "off" or config.distribute.xla:
        log.info(
            "mixed precision %s (softmax in float32), XLA %s",
            config.distribute.mixed_precision,
            "on" if config.distribute.xla else "off",
        )
    try:
        train_source = open_source(config.data, config.train_split)
        val_source = open_source(config.data, config.val_split)
        if train_source.classes != val_source.classes:
            raise RunFolderError(
                f"{config.data}: classes differ between {config.train_split} "
                f"{list(train_source.classes)} and {config.val_split} {list(val_source.classes)}"
            )
        classes = list(train_source.classes)
        if chief:
            model = _phase_one(config, run, train_source, val_source)
        else:
            _wait_for_head(run)
        if not chief or strategy_name(strategy) != "default":  # phase 2 built in the scope
            pretrained = str(config.weights).lower() != "none"
            with strategy.scope():
                model = create_model(
                    len(classes), config.image_size, "none", config.dropout, pretrained
                )
            model.load_weights(run / "weights" / "head.weights.h5")
        if config.finetune.epochs > 0 and config.finetune.unfreeze_from != "none":
            _fine_tune(model, config, run, train_source, val_source, strategy)
        if not chief:
            log.info("worker %s done; the chief writes the run folder", task_label())
            return TrainResult(run, {}, float("nan"), time.perf_counter() - started)
        model.save(run / "weights" / "last.keras")
    finally:
        set_precision(DistributeConfig())  # back to float32 for whatever runs next
    plot_training_curves(read_results(run / "results.csv"), run / "training_curves.png")
    classifier = load_model(run)
    result = predict_source(classifier.predict_images, val_source, config.image_size)
    metrics = write_evaluation(result, run / "evaluation", f"{run.name}: {config.val_split} split")
    shutil.rmtree(run / "backup", ignore_errors=True)
    seconds = time.perf_counter() - started
    state = _set_state(run, done=True, val_accuracy=metrics["accuracy"], train_seconds=seconds)
    log.info(
        "done in %.1f min: %s accuracy %.4f (%d/%d), macro F1 %.4f -> %s",
        seconds / 60,
        config.val_split,
        metrics["accuracy"],
        metrics["num_images"] - metrics["num_errors"],
        metrics["num_images"],
        metrics["macro_f1"],
        run / "evaluation",
    )
    return TrainResult(run, metrics, float(state.get("head_speedup", float("nan"))), seconds)


def _phase_one(config: TrainConfig, run: Path, train: DataSource, val: DataSource):
    """The model with its trained head (trained now, or loaded when a resumed run has it)."""
    from defectscope.models.xception import create_model

    classes = list(train.classes)
    model = create_model(len(classes), config.image_size, config.weights, config.dropout)
    write_model_metadata(
        run / "weights", classes, config.image_size, source_run=str(run), data=str(config.data)
    )
    state = _state(run)
    if config.head.epochs == 0 and not state.get("head_done"):
        log.info("phase 1 skipped (head.epochs = 0)")
        model.save_weights(run / "weights" / "head.weights.h5")
        _set_state(run, head_done=True, head_val_accuracy=-1.0)
    elif not state.get("head_done"):
        _train_head(model, config, run, train, val)
    else:
        model.load_weights(run / "weights" / "head.weights.h5")
        log.info("phase 1 already done (val_acc %.4f)", state["head_val_accuracy"])
    return model
