"""Phase 2: fine-tune the top blocks with augmentation; best checkpoint, resumable, distributed."""

from __future__ import annotations

import logging

import numpy as np

from defectscope.core.progress import on_terminal
from defectscope.data.pipeline import DataSource, create_dataset
from defectscope.models.xception import set_trainable_blocks
from defectscope.training.callbacks import (
    HEAD_PHASE,
    NO_SCORE,
    BestCheckpoint,
    ChiefBackupAndRestore,
    EpochRandomState,
    PreciseBatchNorm,
    ResultsLog,
    StepProgress,
    StopOnDivergence,
    best_so_far,
    read_results,
    score_of_row,
)
from defectscope.training.config import TrainConfig
from defectscope.training.distribute import (
    FitInputs,
    is_chief,
    multi_worker_inputs,
    single_worker_inputs,
    strategy_name,
)
from defectscope.training.keras_compat import prepare_multiworker_fit
from defectscope.training.run_folder import RunFolder

log = logging.getLogger("defectscope.train")


def _fit_verbosity() -> int:
    return 1 if on_terminal() else 0  # a progress bar on a terminal, log lines otherwise


def _compile(model, config: TrainConfig, inputs: FitInputs, strategy) -> None:
    """Adam with warm-up and cosine decay; the peak rate scales with the replicas."""
    import keras

    phase = config.finetune
    scale = inputs.replicas if config.distribute.scale_learning_rate else 1
    learning_rate, steps = phase.learning_rate * scale, inputs.steps_per_epoch
    if inputs.replicas > 1:
        log.info(
            "%d replicas: global batch %d, peak learning rate %.2e, %d steps per epoch",
            inputs.replicas,
            inputs.global_batch,
            learning_rate,
            steps,
        )
    warmup = int(steps * phase.warmup_epochs)
    with strategy.scope():
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=max(1, steps * phase.epochs - warmup),
            warmup_target=learning_rate,
            warmup_steps=warmup,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=phase.label_smoothing
            ),
            metrics=[
                "accuracy",
                keras.metrics.CategoricalCrossentropy(name="xent", from_logits=True),
            ],
            jit_compile=config.distribute.xla,
        )


def _callbacks(config: TrainConfig, run: RunFolder, chief: bool) -> list:
    """Results and best first: a kill before the backup only repeats that epoch."""
    import keras

    history = [r for r in read_results(run.results_file) if r["phase"] == "finetune"]
    state = run.read_state()
    head = NO_SCORE
    if state.head_selection_accuracy is not None:
        xent = state.head_selection_xent
        head = (state.head_selection_accuracy, HEAD_PHASE, -(np.inf if xent is None else xent))
    best, wait = best_so_far([head] + [score_of_row(r) for r in history])
    callbacks = [
        BestCheckpoint(run.best_model, best, config.finetune.patience, write=chief, wait=wait),
        ChiefBackupAndRestore(str(run.backup_dir), write=chief),
        EpochRandomState(),
        StopOnDivergence("finetune", "finetune", config.finetune.learning_rate),
    ]
    if chief:
        epochs, terminal = config.finetune.epochs, on_terminal()
        results = ResultsLog(run.results_file, "finetune", epochs, announce=not terminal)
        callbacks.insert(0, results)
        logs = keras.callbacks.TensorBoard(str(run.logs_dir), write_graph=False, profile_batch=0)
        callbacks.append(logs)
        if not terminal:  # Keras draws a bar on a terminal; a log file gets lines
            callbacks.append(StepProgress("finetune", epochs))
    return callbacks


def _precise_norms(config: TrainConfig, train: DataSource, pretrained: bool) -> list:
    """From random weights: BatchNormalization statistics recomputed before each validation."""
    if pretrained:
        return []
    images = create_dataset(
        train, image_size=config.image_size, batch_size=config.batch_size, resize=config.resize
    ).map(lambda image, label: image)
    return [PreciseBatchNorm(images)]


def fine_tune(
    model, config: TrainConfig, run: RunFolder, train: DataSource, selection: DataSource, strategy
) -> None:
    """Train the unfrozen blocks of ``model`` (built in ``strategy``'s scope when distributed),
    choosing the best epoch on ``selection``. Every worker runs this; only the chief writes."""
    chief = is_chief()
    pretrained = str(config.weights).lower() != "none"
    layers = set_trainable_blocks(model, config.finetune.unfreeze_from, pretrained)
    log.info(
        "fine-tuning from %s: %d backbone layers trainable", config.finetune.unfreeze_from, layers
    )
    weights = run.read_state().class_weights
    class_weight = dict(enumerate(weights)) if weights else None
    make_inputs = (
        multi_worker_inputs if strategy_name(strategy) == "multiworker" else single_worker_inputs
    )
    inputs = make_inputs(strategy, config, train, selection, class_weight, run.backup_epoch())
    _compile(model, config, inputs, strategy)
    prepare_multiworker_fit(model, strategy, config.image_size, len(train.classes))
    model.fit(
        inputs.train,
        validation_data=inputs.val,
        epochs=config.finetune.epochs,
        steps_per_epoch=inputs.steps_per_epoch,
        shuffle=False,  # the dataset shuffles itself, by seed and epoch
        class_weight=inputs.class_weight,
        callbacks=_callbacks(config, run, chief) + _precise_norms(config, train, pretrained),
        verbose=_fit_verbosity() if chief else 0,
    )
