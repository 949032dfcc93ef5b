"""``task: detect``: RetinaNet's pyramid and heads trained on cached Xception features.

Backpropagating through Xception every step runs at about 2 images/s on two CPU cores, so the
encoder stays frozen (ImageNet weights, BatchNormalization in inference mode) and its P3-P5
outputs are computed once per image (and once per mirrored copy) into a disk cache
(:mod:`~defectscope.training.pyramid_cache`). The feature pyramid and the box and class heads
train on those, with KerasHub's label encoder and losses (the detector's own ``compute_loss``);
the epoch with the best mAP@0.5 on the selection set is kept, and the whole detector (encoder
included) is saved, so prediction and export see one ordinary KerasHub model.
With ``detect.tune_from_block`` the encoder's last blocks train too, from cached inputs (off
by default: on NEU-DET tuning blocks 13-14 scored below the frozen encoder, docs/detection.md).
With ``detect.finetune_epochs`` the whole detector trains after the heads
(:mod:`~defectscope.training.detect_finetune`), and the end's choices see the selection set
through its tuned encoder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from pathlib import Path

import keras

from defectscope.core.errors import ConfigError
from defectscope.data.discovery import BACKGROUND
from defectscope.evaluation.detection import choose_box_confidence, coco_metrics
from defectscope.inference.flips import TTA_FLIPS
from defectscope.models.box_loss import create_box_loss
from defectscope.models.detector import (
    DEFAULT_NMS_IOU,
    compiled_decoder,
    create_detector,
    detector_settings,
    register_detector_layers,
    set_nms_iou,
    split_encoder,
)
from defectscope.training.callbacks import (
    AveragedWeights,
    ChiefBackupAndRestore,
    ResultsLog,
    StopOnDivergence,
)
from defectscope.training.config import TrainConfig
from defectscope.training.detect_finetune import finetune_detector
from defectscope.training.detect_fit import fit_copies, report_anchor_coverage
from defectscope.training.detect_parts import (
    BestDetector,
    SelectionMap,
    history_best,
    save_detector,
    scaled_rate_adam,
    with_padding_row,
)
from defectscope.training.detect_selection import (
    decode,
    measure_flips,
    raw_outputs,
    truths,
)
from defectscope.training.distribute import epoch_seed
from defectscope.training.pyramid_cache import (
    PyramidCache,
    cache_pyramids,
    cached_batches,
    epoch_steps,
)
from defectscope.training.run_folder import RunFolder, Stage
from defectscope.training.sources import RunSources
from defectscope.training.time_budget import (
    BudgetTiming,
    RunClock,
    after_finetune,
    create_time_budget,
)

log = logging.getLogger("defectscope.train")

TUNED_FEATURES = ".tuned-features"  # the selection set through a tuned encoder, for the end


def head_trainer(detector, tune_from_block: int = 0):
    """A model from cached encoder outputs to the detector's raw outputs, sharing the
    detector's layers (the tuned encoder blocks, the pyramid and the heads), whose loss is the
    detector's own (label encoder, focal loss)."""
    from keras import ops

    encoder = detector.backbone.image_encoder
    cached, tail = split_encoder(encoder, tune_from_block)
    inputs = {name: keras.Input(tuple(t.shape[1:]), name=name) for name, t in cached.items()}
    levels = {"P3": inputs["P3"]}
    levels.update(inputs if tail is None else tail(inputs[f"C{tune_from_block}"]))
    pyramid = detector.backbone.feature_pyramid(levels)
    boxes, classes = [], []
    for level in pyramid:
        boxes.append(keras.layers.Reshape((-1, 4))(detector.box_head(pyramid[level])))
        classes.append(
            keras.layers.Reshape((-1, detector.num_classes))(
                detector.classification_head(pyramid[level])
            )
        )
    outputs = {
        "bbox_regression": keras.layers.Concatenate(axis=1)(boxes),
        "cls_logits": keras.layers.Concatenate(axis=1)(classes),
    }
    size = encoder.image_size

    class CachedFeatureTrainer(keras.Model):
        def compute_loss(self, x, y, y_pred, sample_weight=None, **kwargs):
            images = ops.zeros((ops.shape(x["P3"])[0], size, size, 3))  # shape for the anchors
            return detector.compute_loss(images, with_padding_row(y), y_pred, sample_weight)

    return CachedFeatureTrainer(inputs, outputs, name="retinanet_heads")


# NMS IoU thresholds tried on the selection set when detect.nms_iou is not set (a NEU-DET
# detector's selection mAP@0.5 at 0.1 / 0.3 / 0.4 / 0.5 / 0.6: 0.35 / 0.38 / 0.38 / 0.35 / 0.29)
NMS_IOU_CANDIDATES = (0.3, 0.4, 0.5, 0.6)


def choose_decoding(
    run: RunFolder, config: TrainConfig, selection: PyramidCache, classes, mirrored: dict
) -> dict:
    """How the saved best detector decodes, chosen on the selection set and saved in it:
    ``nms_iou`` (``detect.nms_iou``, else the best of :data:`NMS_IOU_CANDIDATES` by selection
    mAP, with ``nms_iou_selection_map50`` per threshold) and ``box_confidence``, the least
    confidence of a box shown to users (best F1 at that threshold; ``box_confidence_selection_f1``);
    ``tta``: the same measured with test-time flips (``mirrored``: the selection's mirrored
    copies). The raw outputs are computed once and decoded once per threshold."""
    register_detector_layers()
    best = keras.saving.load_model(run.best_model, compile=False)
    trainer = head_trainer(best, config.detect.tune_from_block)
    raws = raw_outputs(trainer, selection)
    true_boxes = truths(selection)
    fixed = config.detect.nms_iou
    scores, found = {}, {}
    with _quiet_retracing():
        for iou in NMS_IOU_CANDIDATES if fixed is None else (fixed,):
            set_nms_iou(best, iou)
            decoder = compiled_decoder(best)
            found[iou] = [b for raw in raws for b in decode(decoder, raw, config.image_size)]
            metrics = coco_metrics(true_boxes, found[iou], classes, config.image_size)
            scores[iou] = (metrics["map50"], metrics["map50_95"])
    chosen = pick_nms_iou(scores)
    confidence, f1 = choose_box_confidence(true_boxes, found[chosen], len(classes))
    log.info(
        "NMS IoU %.2f %s (mAP@0.5 %s); boxes shown from confidence %.2f (selection F1 %.4f)",
        chosen,
        "set by detect.nms_iou" if fixed is not None else "chosen on the selection set",
        ", ".join(f"{iou:.2f}: {score[0]:.4f}" for iou, score in scores.items()),
        confidence,
        f1[f"{confidence:.2f}"],
    )
    set_nms_iou(best, chosen)
    save_detector(best, run.best_model)
    decoding = {"nms_iou": chosen, "box_confidence": confidence, "box_confidence_selection_f1": f1}
    if fixed is None:
        decoding["nms_iou_selection_map50"] = {f"{i:.2f}": v[0] for i, v in scores.items()}
    with _quiet_retracing():
        flips = measure_flips(best, trainer, compiled_decoder(best), selection, mirrored, raws)
    log.info(
        "with test-time flips (--tta): selection mAP@0.5 %.4f; boxes shown from confidence %.2f",
        flips["selection_map50"],
        flips["box_confidence"],
    )
    return {**decoding, "tta": flips}


@contextlib.contextmanager
def _quiet_retracing():
    """TensorFlow's "retracing" warnings silenced: a decoder graph per NMS threshold and batch
    size is expected here."""
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_log.setLevel(level)


def pick_nms_iou(scores: dict[float, tuple[float, float]]) -> float:
    """The threshold with the best (mAP@0.5, mAP@0.5:0.95); a tie (e.g. a selection set
    without boxes, where every score is -1) keeps the one nearest the default 0.5."""
    return max(scores, key=lambda iou: (scores[iou], -abs(iou - DEFAULT_NMS_IOU)))


def _compile(trainer, detector, config: TrainConfig, steps: int) -> None:
    phase = config.detect
    warmup = int(steps * phase.warmup_epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, steps * phase.epochs - warmup),
        warmup_target=phase.learning_rate,
        warmup_steps=warmup,
    )
    encoder_weights = {id(w) for w in detector.backbone.image_encoder.weights}
    slower = [w for w in trainer.trainable_weights if id(w) in encoder_weights]
    optimizer = scaled_rate_adam(schedule, slower, phase.encoder_rate_scale, phase.ema_momentum)
    # the trainer's loss is the detector's: its losses are set here
    box_loss, box_weight = create_box_loss(phase.box_loss, detector, phase.box_loss_beta)
    detector.compile(
        box_loss=box_loss, loss_weights={"bbox_regression": box_weight, "cls_logits": 1.0}
    )
    trainer.compile(optimizer=optimizer)


def detector_classes(classes: list[str]) -> list[str]:
    """The box classes: the dataset's, without the ``background`` of images without boxes
    (discovery puts it last, so box labels index both lists alike)."""
    return [name for name in classes if name != BACKGROUND]


def train_detector(
    run: RunFolder, config: TrainConfig, sources: RunSources, started: float | None = None
) -> dict:
    """Train (or resume) the detector's heads, then the whole detector's epochs if any, and
    save best/last.keras; returns how it decodes (:func:`choose_decoding`). ``started``
    (``time.perf_counter()`` when the run began, default now) starts the clock of
    ``detect.time_minutes``. A run killed after the heads resumes at the whole detector's
    epochs, one killed after those at the choices that follow them."""
    started = time.perf_counter() if started is None else started
    classes = detector_classes(sources.classes)
    phase = config.detect
    detector = create_detector(
        classes, config.image_size, config.weights, **detector_settings(phase)
    )
    caching = time.perf_counter()
    fit = [cache_pyramids(detector, sources.fit, config, run, copy) for copy in fit_copies(phase)]
    selection = cache_pyramids(detector, sources.selection, config, run, "none")
    mirrored = {  # for the end's choice with test-time flips; cached now, so the end is short
        copy: cache_pyramids(detector, sources.selection, config, run, copy) for copy in TTA_FLIPS
    }
    if run.read_state().stage is Stage.CREATED:  # features are cached: a resume trains on
        run.update_state(stage=Stage.HEAD_DONE, feature_seconds=time.perf_counter() - caching)
    timing = BudgetTiming(sources.validation.num_examples, RunClock.of(run, started))
    if run.read_state().stage not in (Stage.TRAINED, Stage.HEADS_TRAINED):
        if not fit[0].boxes().size or not (fit[0].labels() >= 0).any():
            raise ConfigError(f"{config.data}: the training images hold no box to learn from")
        report_anchor_coverage(detector, fit[0], classes)
        _fit_heads(run, config, detector, (fit, selection, classes), timing)
        save_detector(detector, run.last_model)
        run.update_state(stage=Stage.HEADS_TRAINED if phase.finetune_epochs else Stage.TRAINED)
    if run.read_state().stage is Stage.HEADS_TRAINED:
        budget = _finetune_budget(run, config, detector, sources, timing)
        finetune_detector(run, config, (sources.fit, sources.selection, classes), budget)
        run.update_state(stage=Stage.TRAINED)
    tuned = run.root / TUNED_FEATURES
    if phase.finetune_epochs:  # the end's choices see the selection set through the tuned encoder
        selection, mirrored = _tuned_selection(run, config, sources, tuned)
    decoding = choose_decoding(run, config, selection, classes, mirrored)
    last = keras.saving.load_model(run.last_model, compile=False)  # registered by choose_decoding
    set_nms_iou(last, decoding["nms_iou"])
    save_detector(last, run.last_model)
    shutil.rmtree(tuned, ignore_errors=True)
    return decoding


def _tuned_selection(run: RunFolder, config: TrainConfig, sources: RunSources, folder: Path):
    """The selection set's caches (plain, and mirrored for test-time flips) computed by the
    saved best detector's encoder, in ``folder`` of the run, keyed by that file's content."""
    register_detector_layers()
    best = keras.saving.load_model(run.best_model, compile=False)
    tuned = dataclasses.replace(config, weights=str(run.best_model), feature_cache=str(folder))
    selection = cache_pyramids(best, sources.selection, tuned, run, "none")
    mirrored = {
        copy: cache_pyramids(best, sources.selection, tuned, run, copy) for copy in TTA_FLIPS
    }
    return selection, mirrored


def _time_budget(run: RunFolder, config: TrainConfig, timing: BudgetTiming, detector, **phase):
    """``detect.time_minutes``' callback of the phase being fitted; ``phase`` holds
    :func:`create_time_budget`'s ``selection_map``, ``results_log`` and the phase's limits."""
    return create_time_budget(
        run,
        config.detect,
        encoder_seconds=timing.encoder_seconds(detector),
        validation_count=timing.validation_count,
        clock=timing.clock,
        **phase,
    )


def _finetune_budget(run: RunFolder, config: TrainConfig, detector, sources, timing: BudgetTiming):
    """The ``detect.time_minutes`` callback of the whole detector's epochs (None without)."""
    if not config.detect.time_minutes:
        return None
    selection_count, encoder = sources.selection.num_examples, timing.encoder_seconds(detector)
    return lambda scoring, results: _time_budget(
        run,
        config,
        timing,
        detector,
        selection_map=scoring,
        results_log=results,
        max_epochs=config.detect.finetune_epochs,
        reserve=lambda mean_epoch: after_finetune(selection_count, encoder),
        end_selection_seconds=run.read_state().selection_seconds,
    )


def _fit_heads(
    run: RunFolder, config: TrainConfig, detector, data: tuple, timing: BudgetTiming
) -> None:
    """The epochs: ``data`` holds the fit caches, the selection cache and the class names;
    ``timing`` the validation split's size and the run's clock, for ``detect.time_minutes``.
    The best epoch's detector is saved (the last one when no epoch scored)."""
    fit, selection, classes = data
    phase = config.detect
    trainer = head_trainer(detector, phase.tune_from_block)
    steps = epoch_steps(fit, phase.batch_size)
    _compile(trainer, detector, config, steps)
    first = run.backup_epoch()
    batches = cached_batches(fit, phase.batch_size, lambda e: epoch_seed(config.seed, e), first)
    log.info(
        "detector: %d fit images (%d cached copies), %d selection images, %d steps per epoch",
        fit[0].count,
        len(fit),
        selection.count,
        steps,
    )
    callbacks = _callbacks(run, config, detector, selection, classes, first)
    scoring = next(c for c in callbacks if isinstance(c, SelectionMap))
    if phase.time_minutes:
        callbacks.append(
            _time_budget(
                run,
                config,
                timing,
                detector,
                selection_map=scoring,
                results_log=next(c for c in callbacks if isinstance(c, ResultsLog)),
                reserve=timing.finetune_reserve(detector, phase, fit[0].count, selection.count),
            )
        )
    trainer.fit(  # the batches are shuffled by seed, per epoch: no shuffle by Keras
        batches,
        epochs=phase.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )
    if not run.best_model.is_file():  # not one epoch beat nothing (mAP -1): keep the last
        save_detector(detector, run.best_model)
    if scoring.seconds:  # an epoch ran in this process (a resumed one may have none left)
        run.update_state(selection_seconds=scoring.seconds)


def _callbacks(run: RunFolder, config: TrainConfig, detector, selection, classes, first: int):
    """The moving average of the weights (``detect.ema_momentum``), selection mAP, the best
    checkpoint, results.csv, backups and the stop on divergence, in that order."""
    phase = config.detect
    best, wait = history_best(run.results_file)
    averaged = [AveragedWeights(resumed=first > 0)] if phase.ema_momentum else []
    return [
        *averaged,
        SelectionMap(compiled_decoder(detector), selection, classes, config.image_size),
        BestDetector(detector, run.best_model, best, phase.patience, wait),
        ResultsLog(run.results_file, "detect", phase.epochs),
        ChiefBackupAndRestore(str(run.backup_dir)),
        StopOnDivergence("detect", "detect", phase.learning_rate),
    ]
