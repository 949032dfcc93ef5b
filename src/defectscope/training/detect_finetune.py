"""Phase 2 of ``task: detect`` (``detect.finetune_epochs``): the whole detector trained end to
end after its heads.

The heads learn first on cached features of the frozen ImageNet encoder
(:mod:`~defectscope.training.detect`). From the best of those epochs the encoder trains too
(its BatchNormalization stays in inference mode), on the fit images mirrored at random as the
cached copies are, for a few epochs of a warm-up and cosine schedule. Each epoch is scored on
the selection images and saved as the best detector only when it beats every epoch before it,
the heads' included. Backpropagating through Xception costs about 2.5 times a heads epoch
(docs/detection.md), which is why the heads come first, on cached features.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from defectscope.data.detection import create_detection_dataset, create_mirrored_epoch
from defectscope.data.pipeline import DataSource
from defectscope.evaluation.detection import coco_metrics
from defectscope.models.box_loss import create_box_loss
from defectscope.models.detector import (
    compiled_decoder,
    compiled_forward,
    register_detector_layers,
)
from defectscope.training.callbacks import ChiefBackupAndRestore, ResultsLog, StopOnDivergence
from defectscope.training.config import TrainConfig
from defectscope.training.detect_parts import (
    BestDetector,
    SelectionMap,
    history_best,
    save_detector,
    scaled_rate_adam,
    with_padding_row,
)
from defectscope.training.detect_selection import decode, true_boxes
from defectscope.training.distribute import concatenated_epochs, epoch_seed
from defectscope.training.run_folder import RunFolder

log = logging.getLogger("defectscope.train")

PHASE = "detect-finetune"  # its rows in results.csv
BACKUP = "finetune"  # its backup folder, inside the run's


def tuned_encoder_layers(encoder) -> list:
    """The encoder layers the whole detector's epochs train: every one with weights except
    BatchNormalization (kept in inference mode: batches of 16 steel images would drift
    ImageNet's statistics)."""
    return [
        layer
        for layer in encoder.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]


def unfreeze_encoder(detector) -> int:
    """:func:`tuned_encoder_layers` trainable, every other encoder layer frozen; returns the
    count of trainable encoder weights."""
    encoder = detector.backbone.image_encoder
    tuned = {id(layer) for layer in tuned_encoder_layers(encoder)}
    for layer in encoder.layers:
        if layer.weights:
            layer.trainable = id(layer) in tuned
    return sum(int(np.prod(weight.shape)) for weight in encoder.trainable_weights)


def image_selection_map(
    forward, decoder, source: DataSource, classes: list[str], size: int, batch_size: int = 32
) -> dict:
    """COCO mAP of the whole detector (``forward``: images -> its raw outputs) on the
    selection images (the encoder has changed, so cached features no longer stand for them)."""
    found, truth = [], []
    for images, target, _ in create_detection_dataset(source, size, batch_size):
        raw = {k: np.asarray(v) for k, v in forward(images).items()}
        found += decode(decoder, raw, size)
        truth += true_boxes(target["boxes"], target["labels"])
    return coco_metrics(truth, found, classes, size)


class ImageSelectionMap(SelectionMap):
    """:class:`SelectionMap` of the whole detector, from the selection images, through one
    compiled forward pass."""

    forward = None

    @property
    def count(self) -> int:
        return self.selection.num_examples

    def measure(self) -> dict:
        if self.forward is None:
            self.forward = compiled_forward(self.model)
        return image_selection_map(
            self.forward, self.decoder, self.selection, self.classes, self.size
        )


def finetune_steps(fit_count: int, batch_size: int) -> tuple[int, int]:
    """(batch size, steps per epoch) over ``fit_count`` images: whole batches, each image at
    most once per epoch."""
    batch = max(1, min(batch_size, fit_count))
    return batch, max(1, fit_count // batch)


def finetune_detector(
    run: RunFolder, config: TrainConfig, data: tuple[DataSource, DataSource, list[str]], budget=None
) -> None:
    """``detect.finetune_epochs`` epochs of the whole detector from the saved best one; the
    best epoch (if any beats the heads) replaces it, the last one is saved as last.keras. A
    killed run resumes at its last finished epoch. ``data``: the fit and selection sources and
    the box classes; ``budget``: a callable of the :class:`SelectionMap` and
    :class:`ResultsLog` giving the ``detect.time_minutes`` callback."""
    phase, (fit, selection, classes) = config.detect, data
    register_detector_layers()
    detector = keras.saving.load_model(run.best_model, compile=False)  # compiled below
    tuned = unfreeze_encoder(detector)
    batch, steps = finetune_steps(fit.num_examples, phase.batch_size)
    _compile(detector, config, steps)
    batches = _training_batches(fit, config, batch, run.backup_epoch(BACKUP))
    log.info(
        "whole detector: %d encoder weights trained too, %d epochs of %d steps, from %s",
        tuned,
        phase.finetune_epochs,
        steps,
        run.best_model,
    )
    best, wait = history_best(run.results_file, ("detect", PHASE))
    scoring = ImageSelectionMap(compiled_decoder(detector), selection, classes, config.image_size)
    results = ResultsLog(run.results_file, PHASE, phase.finetune_epochs)
    callbacks = [
        scoring,
        BestDetector(detector, run.best_model, best, 0, wait),
        results,
        ChiefBackupAndRestore(str(run.backup_dir / BACKUP)),
        StopOnDivergence(PHASE, "detect", phase.finetune_learning_rate, "finetune_learning_rate"),
    ]
    if budget is not None:
        callbacks.append(budget(scoring, results))
    detector.fit(
        batches,
        epochs=phase.finetune_epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )
    save_detector(detector, run.last_model)


def _training_batches(fit: DataSource, config: TrainConfig, batch: int, first_epoch: int):
    """The epochs from ``first_epoch`` on, seeded after the heads' epochs' seeds, with the
    padding row KerasHub's matcher needs."""
    phase = config.detect
    batches = concatenated_epochs(
        lambda epoch: create_mirrored_epoch(
            fit, config.image_size, batch, epoch_seed(config.seed, phase.epochs + epoch)
        ),
        first_epoch,
        phase.finetune_epochs,
    )
    return batches.map(lambda images, truth: (images, with_padding_row(truth))).prefetch(2)


def _compile(detector, config: TrainConfig, steps: int) -> None:
    """Adam on every trainable weight: half an epoch of warm-up to
    ``detect.finetune_heads_learning_rate`` (the encoder's steps scaled to
    ``detect.finetune_learning_rate``), then a cosine to zero at the last epoch; the box and
    class losses of the heads' phase."""
    phase = config.detect
    warmup = steps // 2
    heads_rate = phase.finetune_heads_learning_rate or phase.finetune_learning_rate
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, steps * phase.finetune_epochs - warmup),
        warmup_target=heads_rate,
        warmup_steps=warmup,
    )
    encoder = detector.backbone.image_encoder.trainable_weights
    optimizer = scaled_rate_adam(schedule, encoder, phase.finetune_learning_rate / heads_rate)
    box_loss, box_weight = create_box_loss(phase.box_loss, detector, phase.box_loss_beta)
    detector.compile(
        optimizer=optimizer,
        box_loss=box_loss,
        loss_weights={"bbox_regression": box_weight, "cls_logits": 1.0},
    )
