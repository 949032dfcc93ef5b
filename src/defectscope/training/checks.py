"""What a training run needs, checked before TensorFlow loads: a bad path or value fails in a
moment with one line, not after 15 seconds with a traceback, and leaves no run folder."""

from __future__ import annotations

from pathlib import Path

from defectscope.core.errors import ConfigError, RunFolderError
from defectscope.core.files import check_outside
from defectscope.data.discovery import discover_dataset
from defectscope.data.pipeline import check_source, is_tfrecord_folder, read_manifest
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
    if config.task == "detect":
        check_detection(config, data)
    classes = check_source(data, [config.train_split, config.val_split])
    if config.task != "detect" and len(classes) < 2:
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


def _annotated(data: Path) -> int:
    """How many boxes (TFRecords) or annotated images (a dataset root) the data holds."""
    if is_tfrecord_folder(data):
        splits = read_manifest(data)["splits"].values()
        return sum(int(split.get("num_boxes", 0)) for split in splits)
    samples = [s for split in discover_dataset(data).samples.values() for s in split]
    return sum(1 for s in samples if s.annotation is not None or s.annotation_path is not None)


def check_detection(config: TrainConfig, data: Path) -> None:
    """A detector needs boxes, a square input that is a multiple of 32, and one process."""
    size = config.image_size
    if size < 96 or size % 32:
        raise ConfigError(f"task detect: image_size must be a multiple of 32, >= 96; got {size!r}")
    if config.distribute.strategy not in ("auto", "default"):
        raise ConfigError(
            f"task detect trains in one process; strategy {config.distribute.strategy!r} is "
            "for classification"
        )
    if not _annotated(data):
        raise ConfigError(
            f"{data}: no box annotation; a detector learns from Pascal VOC, YOLO or COCO "
            "boxes (a class-folder dataset trains a classifier)"
        )
