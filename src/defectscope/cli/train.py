"""``train``: two-phase transfer learning into a run folder (or ``--resume`` one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from defectscope.cli.console import warn
from defectscope.core.errors import ConfigError
from defectscope.core.tf_import import import_tensorflow_quietly

_Data = Annotated[Path | None, typer.Option(help="Dataset root or TFRecord folder.")]
_Out = Annotated[Path, typer.Option(help="Run folder to create.")]
_Config = Annotated[
    str | None,
    typer.Option(help="YAML config file or preset name (default, light, demo, detect)."),
]
_Task = Annotated[
    str | None,
    typer.Option(help="classify (one class per image) | detect (boxes; preset detect)."),
]
_Weights = Annotated[
    str | None,
    typer.Option(help="imagenet | none | PATH to xception_imagenet_notop.weights.h5."),
]
_Epochs = Annotated[
    int | None, typer.Option(min=0, help="Fine-tuning epochs (phase 2; detect: epochs).")
]
_HeadEpochs = Annotated[int | None, typer.Option(min=0, help="Head epochs (phase 1).")]
_ImageSize = Annotated[int | None, typer.Option(help="Square input size in pixels.")]
_BatchSize = Annotated[int | None, typer.Option(min=1, help="Fine-tuning batch size per replica.")]
_Seed = Annotated[int | None, typer.Option(help="Seed for a repeatable run.")]
_Resume = Annotated[Path | None, typer.Option(help="Continue this run folder from its last epoch.")]
_Strategy = Annotated[
    str | None,
    typer.Option(help="auto | default | mirrored | multiworker (cluster from TF_CONFIG)."),
]
_CpuDevices = Annotated[
    int | None, typer.Option(help="Split the CPU into N logical devices (mirrored on CPU).")
]
_MixedPrecision = Annotated[
    str | None, typer.Option(help="off | float16 (GPU, loss scaling) | bfloat16.")
]
_Xla = Annotated[
    bool | None, typer.Option("--xla/--no-xla", help="Compile the training step with XLA.")
]
_OkClass = Annotated[
    str | None,
    typer.Option(help="The no-defect class (default: one named ok, good, normal...)."),
]
_MaxEscapeRate = Annotated[
    float | None,
    typer.Option(help="Share of defects the operating point may call OK (default 0.01)."),
]
_Resize = Annotated[str | None, typer.Option(help="stretch | letterbox (keep the aspect ratio).")]
_Time = Annotated[
    float | None,
    typer.Option(
        "--time",
        min=0,
        help="detect: the whole run within this many minutes; training stops when no "
        "further epoch fits (at most --epochs; 0: no limit).",
    ),
]
_FinetuneEpochs = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="detect: epochs of the whole detector (encoder too) after its heads' --epochs "
        "(preset 6; 0: the encoder stays frozen).",
    ),
]


def train(
    data: _Data = None,
    out: _Out = Path("runs/train"),
    config: _Config = None,
    task: _Task = None,
    weights: _Weights = None,
    epochs: _Epochs = None,
    head_epochs: _HeadEpochs = None,
    image_size: _ImageSize = None,
    batch_size: _BatchSize = None,
    seed: _Seed = None,
    resume: _Resume = None,
    strategy: _Strategy = None,
    cpu_devices: _CpuDevices = None,
    mixed_precision: _MixedPrecision = None,
    xla: _Xla = None,
    ok_class: _OkClass = None,
    max_escape_rate: _MaxEscapeRate = None,
    resize: _Resize = None,
    time_minutes: _Time = None,
    finetune_epochs: _FinetuneEpochs = None,
) -> None:
    """Transfer learning: head on cached features, then fine-tuning; evaluates at the end.

    --batch-size is per replica; with several replicas the fine-tuning rate scales with them.
    """
    from defectscope.training.checks import check_train_config
    from defectscope.training.config import resolve_config
    from defectscope.training.distribute import is_chief
    from defectscope.training.run_folder import RunFolder

    if resume is None and data is None:
        raise ConfigError("--data is required (or --resume RUN)")
    if task == "detect":
        config = config or "detect"
    options = _config_options(
        task,
        epochs,
        batch_size,
        {"time_minutes": time_minutes, "finetune_epochs": finetune_epochs},
        data=str(data),
        out=str(out),
        weights=weights,
        image_size=image_size,
        seed=seed,
        head_epochs=head_epochs,
        strategy=strategy,
        cpu_devices=cpu_devices,
        mixed_precision=mixed_precision,
        xla=xla,
        ok_class=ok_class,
        max_escape_rate=max_escape_rate,
        resize=resize,
    )
    if resume:
        RunFolder.open(resume)  # a folder that is no run fails here
        ignored = _given(
            data=data, config=config, task=task, weights=weights, epochs=epochs,
            head_epochs=head_epochs, image_size=image_size, batch_size=batch_size, seed=seed,
            strategy=strategy, cpu_devices=cpu_devices, mixed_precision=mixed_precision, xla=xla,
            ok_class=ok_class, max_escape_rate=max_escape_rate, resize=resize, time=time_minutes,
            finetune_epochs=finetune_epochs,
        )  # fmt: skip
        if ignored:
            warn(f"--resume goes on with {resume}/config.yaml; ignored: {', '.join(ignored)}")
    else:  # bad paths and values fail here, before TensorFlow loads
        resolved = resolve_config(config, **options)
        for flag, value in (("--time", time_minutes), ("--finetune-epochs", finetune_epochs)):
            if value is not None and resolved.task != "detect":
                raise ConfigError(
                    f"{flag} is for detectors (task detect), not task {resolved.task!r}"
                )
        check_train_config(resolved, new_run=is_chief())
    import_tensorflow_quietly()
    from defectscope.training import trainer  # imports Keras: after the quiet import

    result = trainer.resume(resume) if resume else trainer.train(resolved)
    typer.echo(_summary(result))


def _config_options(task: str | None, epochs, batch_size, detect_only: dict, **given) -> dict:
    """The command's options as :func:`resolve_config` takes them: a detector's ``--epochs``
    and ``--batch-size`` are its own, not fine-tuning's; ``detect_only`` (``time_minutes``,
    ``finetune_epochs``) are a detector's only."""
    timed = {k: v for k, v in detect_only.items() if v is not None}
    if task != "detect":
        detect = timed or None
        return {"task": task, "detect": detect, "epochs": epochs, "batch_size": batch_size, **given}
    chosen = {"epochs": epochs, "batch_size": batch_size}
    detect = {k: v for k, v in chosen.items() if v is not None} | timed
    return {"task": task, "detect": detect, "epochs": None, "batch_size": None, **given}


def _given(**options) -> list[str]:
    """The flags of the options given (not None)."""
    return [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None]


def _summary(result) -> str:
    """The line a finished run prints: its main figures, minutes and folder."""
    metrics = result.metrics
    minutes = f"{result.seconds / 60:.1f} min"
    if not metrics:
        return f"worker done ({minutes}); the chief wrote {result.run_dir}"
    if metrics.get("task") == "detect":
        return (
            f"mAP@0.5 {metrics['map50']:.4f}, mAP@0.5:0.95 {metrics['map50_95']:.4f} "
            f"({metrics['num_images']} images), {minutes} -> {result.run_dir}"
        )
    return (
        f"accuracy {metrics['accuracy']:.4f} ({metrics['num_images'] - metrics['num_errors']}/"
        f"{metrics['num_images']}), macro F1 {metrics['macro_f1']:.4f}, "
        f"{minutes} -> {result.run_dir}"
    )
