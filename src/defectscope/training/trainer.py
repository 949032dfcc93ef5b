"""Two-phase transfer learning: ``train(config)`` starts a run, ``resume(run_dir)`` continues one.

Phase 1 trains the head on cached backbone features (:mod:`~defectscope.training.head`); phase 2
fine-tunes the top blocks (:mod:`~defectscope.training.finetune`); the best checkpoint is then
evaluated by :func:`defectscope.evaluation.evaluate.evaluate`. A run killed at any moment
continues from its last completed epoch with its optimizer state (Keras ``BackupAndRestore``).
The run folder is described in :mod:`~defectscope.training.run_folder`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from defectscope.core.errors import RunFolderError
from defectscope.data.detection import records_for
from defectscope.evaluation.evaluate import evaluate
from defectscope.evaluation.evaluate_detector import evaluate_detector
from defectscope.evaluation.report import plot_training_curves
from defectscope.inference.classifier import load_model
from defectscope.inference.model_files import write_model_metadata
from defectscope.models.detector import detector_settings
from defectscope.models.xception import create_model
from defectscope.training.calibrate import calibrate
from defectscope.training.callbacks import read_results, save_for_inference
from defectscope.training.checks import check_train_config
from defectscope.training.config import TrainConfig
from defectscope.training.detect import detector_classes, train_detector
from defectscope.training.detect_fit import fit_anchor_size, fit_max_detections
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
from defectscope.training.sources import RunSources, open_run_sources, write_splits

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
    """Start a new run in ``config.out``: both phases, then the final evaluation.

    Everything checkable is checked before TensorFlow loads; the run folder is made once
    training can start, and removed again if the run fails before its head is trained.
    """
    check_train_config(config, new_run=is_chief())
    strategy = create_strategy(config.distribute)  # before any other TensorFlow work
    if not is_chief():
        return _run(RunFolder(Path(config.out)), config, strategy)
    run = RunFolder.create(config)
    try:
        return _run(run, config, strategy)
    except BaseException:
        if run.read_state().stage is Stage.CREATED:  # nothing worth resuming: leave nothing
            shutil.rmtree(run.root, ignore_errors=True)
        raise


def resume(run_dir: str | Path) -> TrainResult:
    """Continue a killed run from its last completed epoch (a finished run is returned as is)."""
    run = RunFolder.open(run_dir)
    config, state = run.read_config(), run.read_state()
    if state.stage is Stage.DONE and (run.evaluation_dir / "metrics.json").is_file():
        log.info("%s is already complete; nothing to resume", run.root)
        return TrainResult(run.root, _read_metrics(run), state, 0.0)
    check_train_config(config, new_run=False)
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
    if config.task == "detect":
        return _run_detector(run, config, started)
    with _precision(config.distribute):
        sources = open_run_sources(config)
        if chief:
            write_splits(sources, run.root / "splits.csv")
        model = _model_with_head(run, config, strategy, sources)
        if config.finetune.epochs > 0 and config.finetune.unfreeze_from != "none":
            fine_tune(model, config, run, sources.fit, sources.selection, strategy)
        if not chief:
            log.info("worker %s done; the chief writes the run folder", task_label())
            return TrainResult(run.root, {}, run.read_state(), time.perf_counter() - started)
        save_for_inference(model, run.last_model)
    return _finish(run, config, sources, started)


def _model_with_head(run: RunFolder, config: TrainConfig, strategy, sources: RunSources):
    """The model with its phase-1 head: trained now on the chief (the other workers wait for
    it), or loaded when a resumed run has it. Under a strategy it is built in its scope."""
    if is_chief():
        classes = sources.classes
        model = create_model(len(classes), config.image_size, config.weights, config.dropout)
        write_model_metadata(run.weights_dir, classes, config.image_size, config.resize)
        stage = run.read_state().stage
        if stage is Stage.CREATED and config.head.epochs == 0:
            skip_head(model, run)
        elif stage is Stage.CREATED:
            train_head(model, config, run, sources)
        else:
            model.load_weights(run.head_weights)
            accuracy = run.read_state().head_selection_accuracy
            log.info("phase 1 already done (selection accuracy %s)", accuracy)
        if strategy_name(strategy) == "default":
            return model
    else:
        _wait_for_head(run)
    pretrained = str(config.weights).lower() != "none"
    with strategy.scope():
        model = create_model(
            len(sources.classes), config.image_size, "none", config.dropout, pretrained
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


def _finish(run: RunFolder, config: TrainConfig, sources: RunSources, started: float):
    """Curves, the evaluation of the best checkpoint on the validation split, the state."""
    plot_training_curves(read_results(run.results_file), run.curves_file)
    title = f"{run.root.name}: {config.val_split} split"
    state = run.read_state()
    context = {
        **sources.describe(),
        "head_selection_accuracy": state.head_selection_accuracy,
        "head_validation_accuracy": state.head_validation_accuracy,
    }
    calibrate(run, config, sources, load_model(run.root))
    classifier = load_model(run.root)  # with the operating point and the unknown threshold
    metrics = evaluate(
        classifier, sources.validation, out=run.evaluation_dir, title=title, context=context
    )
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


def _write_detector_metadata(
    run: RunFolder, config: TrainConfig, classes: list[str], settings: dict, chosen=None
) -> None:
    """The weights' metadata.json; ``chosen`` adds the NMS threshold's selection scores."""
    write_model_metadata(
        run.weights_dir,
        classes,
        config.image_size,
        "stretch",
        task="detect",
        detector=settings,
        output="bbox_regression (box deltas) and cls_logits per anchor; KerasHub decodes them",
        **{k: v for k, v in (chosen or {}).items() if k != "nms_iou"},
    )


def _run_detector(run: RunFolder, config: TrainConfig, started: float) -> TrainResult:
    """``task: detect``: the records (converted into the run folder when ``data`` is a dataset
    root), the detector trained on the fit part, chosen on the selection part, evaluated on
    the validation split."""
    records = records_for(config.data, run.root / "records")
    sources = open_run_sources(dataclasses.replace(config, data=str(records)))
    write_splits(sources, run.root / "splits.csv")
    config = fit_max_detections(config, sources.fit)
    classes = detector_classes(sources.classes)
    config = fit_anchor_size(config, sources.fit, classes)
    settings = detector_settings(config.detect)
    _write_detector_metadata(run, config, classes, settings)
    nms = train_detector(run, config, sources, started)
    _write_detector_metadata(run, config, classes, {**settings, "nms_iou": nms["nms_iou"]}, nms)
    plot_training_curves(read_results(run.results_file), run.curves_file)
    metrics = evaluate_detector(
        run.root,
        sources.validation,
        out=run.evaluation_dir,
        title=f"{run.root.name}: {config.val_split} split",
        overwrite=True,
        context={**sources.describe(), **nms},
    )
    shutil.rmtree(run.backup_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    state = run.update_state(stage=Stage.DONE, val_map50=metrics["map50"], train_seconds=seconds)
    log.info(
        "done in %.1f min: %s mAP@0.5 %.4f, mAP@0.5:0.95 %.4f (%d images) -> %s",
        seconds / 60,
        config.val_split,
        metrics["map50"],
        metrics["map50_95"],
        metrics["num_images"],
        run.evaluation_dir,
    )
    return TrainResult(run.root, metrics, state, seconds)
