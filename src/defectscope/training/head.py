"""Phase 1: the classification head on cached backbone features (seconds, not minutes)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from defectscope.data.pipeline import DataSource
from defectscope.models.xception import create_feature_extractor, create_head_model
from defectscope.training.callbacks import ResultsLog
from defectscope.training.config import TrainConfig
from defectscope.training.features import cached_features
from defectscope.training.run_folder import RunFolder, Stage

log = logging.getLogger("defectscope.train")


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced weights when asked, or in ``auto`` mode when class sizes differ by > 10%."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    if mode == "none" or (mode == "auto" and counts.max() <= 1.1 * max(counts.min(), 1)):
        return None
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def train_head(
    model, config: TrainConfig, run: RunFolder, train: DataSource, val: DataSource
) -> None:
    """Train ``model``'s head on cached features of both splits; saves it and the state."""
    import keras

    extractor = create_feature_extractor(model)
    cache_dir = Path(config.feature_cache or run.root.parent / ".feature-cache")
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
    results = ResultsLog(run.results_file, "head", config.head.epochs, quiet_epochs=10)
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
    speedup = (extraction + epoch_seconds) / epoch_seconds if extraction else None
    val_accuracy = float(head.evaluate(x_val, y_val, verbose=0)[1])
    log.info(
        "head: val_acc %.4f; %.2f s per epoch on cached features%s",
        val_accuracy,
        epoch_seconds,
        f" vs {extraction:.0f} s for one backbone pass over train ({speedup:.0f}x)"
        if extraction
        else " (features read from the cache)",
    )
    model.save_weights(run.head_weights)
    model.save(run.best_model)
    run.update_state(
        stage=Stage.HEAD_DONE,
        head_val_accuracy=val_accuracy,
        head_epoch_seconds=epoch_seconds,
        feature_seconds=extraction,
        head_speedup=speedup,
        class_weights=[weights[i] for i in sorted(weights)] if weights else None,
    )


def skip_head(model, run: RunFolder) -> None:
    """``head.epochs = 0``: keep the initial head (e.g. training from random weights)."""
    log.info("phase 1 skipped (head.epochs = 0)")
    model.save_weights(run.head_weights)
    run.update_state(stage=Stage.HEAD_DONE)
