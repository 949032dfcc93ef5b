"""Phase 1: the classification head on cached backbone features (seconds, not minutes)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from defectscope.models.xception import create_feature_extractor, create_head_model
from defectscope.training.callbacks import (
    KeepBest,
    ResultsLog,
    StopOnDivergence,
    save_for_inference,
)
from defectscope.training.config import TrainConfig
from defectscope.training.features import AugmentedCopy, CachedFeatures, cached_features
from defectscope.training.run_folder import RunFolder, Stage
from defectscope.training.sources import RunSources

log = logging.getLogger("defectscope.train")


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced weights when asked, or in ``auto`` mode when class sizes differ by > 10%."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    if mode == "none" or (mode == "auto" and counts.max() <= 1.1 * max(counts.min(), 1)):
        return None
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def augmented_copies(config: TrainConfig) -> list[AugmentedCopy]:
    """The seeded augmented passes over the fit set that phase 1 adds to its clean images."""
    return [
        AugmentedCopy(config.augment, seed=1_000_003 * (copy + 1) + config.seed)
        for copy in range(config.head.augmented_copies)
    ]


def _fit_features(extractor, config: TrainConfig, sources: RunSources, cache_dir: Path):
    """Features of the clean fit set followed by those of its augmented copies."""
    size, resize = config.image_size, config.resize
    parts = [
        cached_features(
            extractor, sources.fit, config.weights, size, cache_dir, resize=resize, copy=copy
        )
        for copy in [None, *augmented_copies(config)]
    ]
    return CachedFeatures(
        np.concatenate([part.features for part in parts]),
        np.concatenate([part.labels for part in parts]),
        sum(part.seconds for part in parts),
        all(part.from_cache for part in parts),
    )


def _features(model, config: TrainConfig, run: RunFolder, sources: RunSources) -> list:
    """Cached backbone features of the fit (with its augmented copies), selection and validation
    sets."""
    extractor = create_feature_extractor(model)
    cache_dir = Path(config.feature_cache or run.root.parent / ".feature-cache")
    fit = _fit_features(extractor, config, sources, cache_dir)
    return [fit] + [
        cached_features(
            extractor, source, config.weights, config.image_size, cache_dir, resize=config.resize
        )
        for source in (sources.selection, sources.validation)
    ]


def train_head(model, config: TrainConfig, run: RunFolder, sources: RunSources) -> None:
    """Train ``model``'s head on cached features of the fit set, keeping the epoch that is best
    on the selection set; measure it on the validation split; save it and the state."""
    import keras

    fit, selection, validation = _features(model, config, run, sources)
    head = create_head_model(model)
    head.compile(
        optimizer=keras.optimizers.Adam(config.head.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            "accuracy",
            keras.metrics.SparseCategoricalCrossentropy(name="xent", from_logits=True),
        ],
    )
    results = ResultsLog(run.results_file, "head", config.head.epochs, quiet_epochs=10)
    keep_best = KeepBest()
    weights = class_weights(fit.labels, len(sources.classes), config.class_weights)
    if weights:
        log.info("classes are imbalanced; class weights %s", weights)
    started = time.perf_counter()
    head.fit(
        fit.features,
        fit.labels,
        batch_size=config.head.batch_size,
        epochs=config.head.epochs,
        validation_data=(selection.features, selection.labels),
        class_weight=weights,
        callbacks=[results, keep_best, StopOnDivergence("head", "head", config.head.learning_rate)],
        verbose=0,
    )
    epoch_seconds = (time.perf_counter() - started) / max(config.head.epochs, 1)
    speedup = (fit.seconds + epoch_seconds) / epoch_seconds if fit.seconds else None
    _, chosen, chosen_xent = head.evaluate(selection.features, selection.labels, verbose=0)
    measured = float(head.evaluate(validation.features, validation.labels, verbose=0)[1])
    log.info(
        "head: selection accuracy %.4f, validation accuracy %.4f; %.2f s per epoch on cached "
        "features%s",
        chosen,
        measured,
        epoch_seconds,
        f" vs {fit.seconds:.0f} s for backbone passes over them ({speedup:.0f}x)"
        if speedup
        else "",
    )
    model.save_weights(run.head_weights)
    save_for_inference(model, run.best_model)
    run.update_state(
        stage=Stage.HEAD_DONE,
        head_selection_accuracy=float(chosen),
        head_selection_xent=float(chosen_xent),
        head_validation_accuracy=measured,
        head_epoch_seconds=epoch_seconds,
        feature_seconds=fit.seconds,
        head_speedup=speedup,
        class_weights=[weights[i] for i in sorted(weights)] if weights else None,
    )


def skip_head(model, run: RunFolder) -> None:
    """``head.epochs = 0``: keep the initial head (e.g. training from random weights)."""
    log.info("phase 1 skipped (head.epochs = 0)")
    model.save_weights(run.head_weights)
    run.update_state(stage=Stage.HEAD_DONE)
