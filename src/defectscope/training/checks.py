"""What a training run needs, checked before TensorFlow loads: a bad path or value fails in a
moment with one line, not after 15 seconds with a traceback, and leaves no run folder."""

from __future__ import annotations

from pathlib import Path

from defectscope.core.errors import ConfigError, RunFolderError
from defectscope.core.files import check_outside
from defectscope.data.pipeline import check_source
from defectscope.models.xception import MIN_IMAGE_SIZE, XCEPTION_BLOCKS, resolve_weights
from defectscope.training.config import TrainConfig


def check_new_run_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(
            f"{out}: run folder exists and is not empty; use --resume {out} or another --out"
        )


def check_train_config(config: TrainConfig, new_run: bool = True) -> tuple[str, ...]:
    """The classes of the data; raises ConfigError, RunFolderError or a data error naming the
    bad value. ``new_run``: the run folder must not hold an earlier run."""
    if not config.data:
        raise ConfigError("no data given (--data DATASET_OR_TFRECORDS)")
    data = Path(config.data)
    classes = check_source(data, [config.train_split, config.val_split])
    if len(classes) < 2:
        raise ConfigError(f"{data}: {len(classes)} class found; training needs at least 2")
    if config.image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {config.image_size!r}")
    if config.finetune.unfreeze_from not in (*XCEPTION_BLOCKS, "all", "none"):
        raise ConfigError(
            "finetune.unfreeze_from must be block1..block14, 'all' or 'none', "
            f"got {config.finetune.unfreeze_from!r}"
        )
    out = Path(config.out)
    check_outside(out, data, "--out", "--data")
    if new_run:
        check_new_run_folder(out)
    resolve_weights(config.weights)
    return classes
