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
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import keras

from defectscope.core.atomic_io import atomic_path
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
    BestCheckpoint,
    ChiefBackupAndRestore,
    ResultsLog,
    StopOnDivergence,
    best_so_far,
    read_results,
)
from defectscope.training.config import TrainConfig
from defectscope.training.detect_fit import fit_copies, report_anchor_coverage
from defectscope.training.detect_selection import (
    decode,
    measure_flips,
    raw_outputs,
    selection_map,
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
from defectscope.training.time_budget import create_time_budget, encoder_seconds_per_image

log = logging.getLogger("defectscope.train")


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


def with_padding_row(truth: dict) -> dict:
    """``truth`` with one more padding row (box 0, class -1) per image: KerasHub 0.32's box
    matcher, force-matching every true box, indexes past the last row when an image fills all
    its rows (the image with the most boxes of a split; training stopped with an
    InvalidArgumentError)."""
    from keras import ops

    batch = ops.shape(truth["labels"])[0]
    return {
        "boxes": ops.concatenate([truth["boxes"], ops.zeros((batch, 1, 4))], axis=1),
        "labels": ops.concatenate([truth["labels"], -ops.ones((batch, 1))], axis=1),
    }


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
    best = keras.saving.load_model(run.best_model)
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
    _save_detector(best, run.best_model)
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


def _save_detector(detector, path) -> None:
    with atomic_path(path) as temp:
        detector.save(temp)


class SelectionMap(keras.callbacks.Callback):
    """The selection set's COCO mAP after each epoch, into the logs (``val_map50``,
    ``val_map50_95``) that :class:`BestDetector` and ``results.csv`` read."""

    def __init__(self, decoder, selection: PyramidCache, classes: list[str], size: int) -> None:
        super().__init__()
        self.decoder, self.selection, self.classes, self.size = decoder, selection, classes, size
        self.seconds = 0.0  # the last evaluation's time

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        started = time.perf_counter()
        found = selection_map(self.model, self.decoder, self.selection, self.classes, self.size)
        self.seconds = time.perf_counter() - started
        if logs is not None:
            logs["val_map50"], logs["val_map50_95"] = found["map50"], found["map50_95"]


class BestDetector(BestCheckpoint):
    """:class:`BestCheckpoint` on (selection mAP@0.5, mAP@0.5:0.95), saving the whole
    detector (encoder included) rather than the model being fitted on cached features."""

    saved = "detector"

    def __init__(self, detector, path: Path, best: tuple, patience: int, wait: int) -> None:
        super().__init__(path, best, patience, wait=wait)
        self.detector = detector

    def score(self, logs: dict | None) -> tuple:
        logs = logs or {}
        return float(logs.get("val_map50", -1.0)), float(logs.get("val_map50_95", -1.0))

    def save(self) -> None:
        _save_detector(self.detector, self.path)

    def describe(self, score: tuple) -> str:
        return f"selection mAP@0.5 {score[0]:.4f}, mAP@0.5:0.95 {score[1]:.4f}"


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
    optimizer = _scaled_rate_adam(schedule, slower, phase.encoder_rate_scale, phase.ema_momentum)
    # the trainer's loss is the detector's: its losses are set here
    box_loss, box_weight = create_box_loss(phase.box_loss, detector, phase.box_loss_beta)
    detector.compile(
        box_loss=box_loss, loss_weights={"bbox_regression": box_weight, "cls_logits": 1.0}
    )
    trainer.compile(optimizer=optimizer)


def _scaled_rate_adam(schedule, slower: list, scale: float, ema_momentum: float = 0.0):
    """Adam whose steps on the ``slower`` variables (pretrained encoder blocks) use ``scale``
    times the learning rate: Keras 3 has no per-variable rates, and scaling their gradients
    would not do it (Adam's steps do not depend on the gradients' scale).

    ``ema_momentum`` > 0 keeps Keras' moving average of the weights; :class:`AveragedWeights`
    puts it into the model at every epoch's end, so the average is there when training ends
    and Keras' final overwrite (with what is then the raw weights) is skipped."""

    class ScaledRateAdam(keras.optimizers.Adam):
        def build(self, variables) -> None:
            super().build(variables)
            self._slower = {self._var_key(variable) for variable in slower}

        def update_step(self, gradient, variable, learning_rate):
            if self._var_key(variable) in self._slower:
                learning_rate = learning_rate * scale
            super().update_step(gradient, variable, learning_rate)

        def finalize_variable_values(self, var_list) -> None:
            pass  # the averaged weights are in the model already (AveragedWeights)

    return ScaledRateAdam(
        schedule, global_clipnorm=10.0, use_ema=ema_momentum > 0, ema_momentum=ema_momentum
    )


def history_best(results_file: Path) -> tuple[tuple[float, float], int]:
    """The best selection score of the epochs already run and how many epochs came after it,
    so that a resumed run goes on counting towards early stopping."""
    rows = [r for r in read_results(results_file) if r["phase"] == "detect"]
    scores = [
        (float(r["selection_map50"] or -1), float(r["selection_map50_95"] or -1)) for r in rows
    ]
    return best_so_far([(-1.0, -1.0), *scores])  # before the first epoch: no score


def detector_classes(classes: list[str]) -> list[str]:
    """The box classes: the dataset's, without the ``background`` of images without boxes
    (discovery puts it last, so box labels index both lists alike)."""
    return [name for name in classes if name != BACKGROUND]


def train_detector(
    run: RunFolder, config: TrainConfig, sources: RunSources, started: float | None = None
) -> dict:
    """Train (or resume) the detector's heads and save best/last.keras; returns how it decodes
    (:func:`choose_decoding`). ``started`` (``time.perf_counter()`` when the run began, default
    now) starts the clock of ``detect.time_minutes``. A run killed after its epochs resumes
    at the choices that follow them."""
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
    if run.read_state().stage is not Stage.TRAINED:
        if not fit[0].boxes().size or not (fit[0].labels() >= 0).any():
            raise ConfigError(f"{config.data}: the training images hold no box to learn from")
        report_anchor_coverage(detector, fit[0], classes)
        timing = (sources.validation.num_examples, started)
        _fit_heads(run, config, detector, (fit, selection, classes), timing)
        _save_detector(detector, run.last_model)
        run.update_state(stage=Stage.TRAINED)
    decoding = choose_decoding(run, config, selection, classes, mirrored)
    last = keras.saving.load_model(run.last_model)  # registered by choose_decoding
    set_nms_iou(last, decoding["nms_iou"])
    _save_detector(last, run.last_model)
    return decoding


def _fit_heads(run: RunFolder, config: TrainConfig, detector, data: tuple, timing: tuple) -> None:
    """The epochs: ``data`` holds the fit caches, the selection cache and the class names;
    ``timing`` the validation split's size and the run's start, for ``detect.time_minutes``.
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
    if phase.time_minutes:
        validation_count, started = timing
        callbacks.append(
            create_time_budget(
                run,
                phase,
                encoder_seconds=encoder_seconds_per_image(detector),
                selection_map=next(c for c in callbacks if isinstance(c, SelectionMap)),
                results_log=next(c for c in callbacks if isinstance(c, ResultsLog)),
                validation_count=validation_count,
                started=started,
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
        _save_detector(detector, run.best_model)


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
