"""``train``: two-phase transfer learning into a run folder (or ``--resume`` one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from defectscope.core.errors import ConfigError
from defectscope.core.tf_import import import_tensorflow_quietly


def train(
    data: Annotated[Path | None, typer.Option(help="Dataset root or TFRecord folder.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder to create.")] = Path("runs/train"),
    config: Annotated[
        str | None,
        typer.Option(help="YAML config file or preset name (default, light, demo, detect)."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="classify (one class per image) | detect (boxes; preset detect)."),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="imagenet | none | PATH to xception_imagenet_notop.weights.h5."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=0, help="Fine-tuning epochs (phase 2; detect: epochs).")
    ] = None,
    head_epochs: Annotated[int | None, typer.Option(min=0, help="Head epochs (phase 1).")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Fine-tuning batch size per replica.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for a repeatable run.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder from its last epoch.")
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(help="auto | default | mirrored | multiworker (cluster from TF_CONFIG)."),
    ] = None,
    cpu_devices: Annotated[
        int | None, typer.Option(help="Split the CPU into N logical devices (mirrored on CPU).")
    ] = None,
    mixed_precision: Annotated[
        str | None, typer.Option(help="off | float16 (GPU, loss scaling) | bfloat16.")
    ] = None,
    xla: Annotated[
        bool | None, typer.Option("--xla/--no-xla", help="Compile the training step with XLA.")
    ] = None,
    ok_class: Annotated[
        str | None,
        typer.Option(help="The no-defect class (default: one named ok, good, normal...)."),
    ] = None,
    max_escape_rate: Annotated[
        float | None,
        typer.Option(help="Share of defects the operating point may call OK (default 0.01)."),
    ] = None,
    resize: Annotated[
        str | None, typer.Option(help="stretch | letterbox (keep the aspect ratio).")
    ] = None,
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
        detect = {"epochs": epochs, "batch_size": batch_size}
        epochs = batch_size = None  # the detector's, not fine-tuning's
    options = dict(
        task=task,
        detect={k: v for k, v in detect.items() if v is not None} if task == "detect" else None,
        data=str(data),
        out=str(out),
        weights=weights,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        epochs=epochs,
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
    else:  # bad paths and values fail here, before TensorFlow loads
        resolved = resolve_config(config, **options)
        check_train_config(resolved, new_run=is_chief())
    import_tensorflow_quietly()
    from defectscope.training import trainer  # imports Keras: after the quiet import

    result = trainer.resume(resume) if resume else trainer.train(resolved)
    metrics = result.metrics
    if not metrics:
        typer.echo(f"worker done ({result.seconds / 60:.1f} min); the chief wrote {result.run_dir}")
        return
    if metrics.get("task") == "detect":
        typer.echo(
            f"mAP@0.5 {metrics['map50']:.4f}, mAP@0.5:0.95 {metrics['map50_95']:.4f} "
            f"({metrics['num_images']} images), {result.seconds / 60:.1f} min -> {result.run_dir}"
        )
        return
    typer.echo(
        f"accuracy {metrics['accuracy']:.4f} ({metrics['num_images'] - metrics['num_errors']}/"
        f"{metrics['num_images']}), macro F1 {metrics['macro_f1']:.4f}, "
        f"{result.seconds / 60:.1f} min -> {result.run_dir}"
    )
