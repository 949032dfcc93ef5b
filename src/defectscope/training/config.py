"""Training configuration: dataclasses, YAML presets, overrides and the resolved config.yaml.

The dataclass defaults *are* the default recipe (preset ``default``); the YAML presets shipped in
``defectscope/presets/`` hold only what differs from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from defectscope.core.atomic_io import atomic_write_text
from defectscope.core.errors import ConfigError
from defectscope.data.augment import AugmentConfig
from defectscope.data.pipeline import check_resize
from defectscope.models.anchors import AUTO_ANCHOR_SIZE
from defectscope.models.box_loss import check_box_loss
from defectscope.models.detector import (
    DEFAULT_MAX_DETECTIONS,
    FIRST_TUNABLE_BLOCK,
    LAST_TUNABLE_BLOCK,
    check_nms_iou,
)
from defectscope.training.distribute import DistributeConfig

MAX_CROPS = 16  # detect.crop_copies at most: each is one more feature cache of the fit images


def check_counts(config, names: tuple[str, ...], prefix: str = "") -> None:
    """Each of ``config``'s fields ``names`` is a whole number >= 1 (a YAML string, a fraction
    or a bool is named in the error instead of failing later)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{prefix}{name} must be a whole number >= 1, got {value!r}")


@dataclass
class HeadPhaseConfig:
    """Phase 1: the head alone, on backbone features computed once and cached."""

    epochs: int = 150
    learning_rate: float = 1e-3
    batch_size: int = 32
    augmented_copies: int = 2  # augmented passes over the fit set besides the clean one

    def __post_init__(self) -> None:
        if self.augmented_copies < 0:
            raise ConfigError(f"head.augmented_copies must be >= 0, got {self.augmented_copies!r}")


@dataclass
class FineTunePhaseConfig:
    """Phase 2: top blocks unfrozen (BatchNorm frozen: inference mode), augmentation on."""

    epochs: int = 5
    learning_rate: float = 2e-4  # peak of the cosine schedule
    warmup_epochs: float = 0.5
    unfreeze_from: str = "block9"  # an Xception block, "all" or "none" (skip phase 2)
    # early stopping on selection accuracy (0: off). Off by default: under the cosine schedule
    # the last, low-rate epochs are the best ones (NEU-DET seed 0: the selection set stayed
    # below the head for epochs 1-3 and beat it at 4-5; patience 2 stopped and kept the head)
    patience: int = 0
    label_smoothing: float = 0.0  # > 0 makes the selection cross-entropy favour phase 1

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ConfigError(f"finetune.patience must be >= 0 (0: off), got {self.patience!r}")


@dataclass
class DetectPhaseConfig:
    """``task: detect``: RetinaNet's pyramid and heads trained on cached encoder features."""

    epochs: int = 30
    learning_rate: float = 1e-3  # peak of the cosine schedule
    warmup_epochs: float = 1.0
    batch_size: int = 16
    head_convs: int = 2  # convolutions before each prediction head (KerasHub's default is 4)
    # anchors of anchor_size x 2^level pixels (P3: 32 at 4) at three scales; "auto": the size
    # that gives the most training boxes of the worst-matched class an anchor (models.anchors)
    anchor_size: float | str = 4.0
    # height / width of the anchors; KerasHub's 0.5-2 leave long thin defects without a
    # matching anchor (NEU-DET training scratches with an anchor at IoU >= 0.5: 16% -> 78%)
    aspect_ratios: list[float] = field(default_factory=lambda: [0.2, 0.5, 1.0, 2.0, 5.0])
    max_level: int = 7
    flips: bool = True  # also train on left-right and up-down mirrored copies
    # and on a copy mirrored along the diagonal (a quarter turn): off, as defects on a rolled
    # strip have a direction (NEU-DET: selection mAP@0.5 0.30 against 0.38 at epoch 17)
    transpose: bool = False
    # and on this many copies cropped at random (a window of 0.6-1 of each side, at a random
    # place, mirrored at random, enlarged to the input): scale and position jitter, cached
    crop_copies: int = 0
    patience: int = 8  # early stopping on selection mAP@0.5 (0: off)
    confidence: float = 0.05  # detections kept by the decoder (mAP needs the low ones)
    # boxes of a class overlapping a better one by more than this are dropped; None: 0.5
    # while training, then chosen on the selection set among 0.3, 0.4, 0.5 and 0.6
    nms_iou: float | None = None
    # first Xception block (5-13) trained with the heads, from cached inputs; 0: all frozen
    tune_from_block: int = 0
    encoder_rate_scale: float = 0.1  # the tuned blocks' learning rate, relative to the heads'
    # box loss: smooth L1 with this beta (Huber(delta=beta) / beta); 1.0 is KerasHub's default
    # Huber, detectron2's RetinaNet uses 0.1 (an L1 pull on small box errors too)
    box_loss_beta: float = 1.0
    # "smooth_l1" (on the anchor deltas, with box_loss_beta) or "ciou": 2 x (1 - CIoU) of the
    # decoded boxes, the overlap that mAP scores, added to that smooth L1 (lost on NEU-DET)
    box_loss: str = "smooth_l1"
    # > 0: selection, checkpoints and exports use the moving average of the weights with this
    # momentum per step (Keras' optimizer EMA; 0.99 averages over about 100 steps); 0: off
    ema_momentum: float = 0.0
    # boxes the decoder keeps per image; training raises it to the most true boxes one
    # training image holds when that is more, so dense images are not cut at 100
    max_detections: int = DEFAULT_MAX_DETECTIONS
    # > 0: the whole run (records, features, epochs, the end's choices and evaluation) within
    # this many minutes: after each epoch the epochs that fit are counted, and training stops
    # when no further one does (the schedule stays that of ``epochs``); 0: no limit
    time_minutes: float = 0.0
    # > 0: after the heads' epochs, this many epochs of the whole detector (the encoder too, its
    # BatchNormalization frozen) on the fit images, mirrored at random; an epoch is kept when
    # it beats the best so far on the selection set; 0: the encoder stays as ImageNet left it
    finetune_epochs: int = 0
    finetune_learning_rate: float = 1e-4  # peak of its cosine schedule (half an epoch warm-up)
    # the pyramid's and heads' peak rate in those epochs (the encoder keeps the rate above);
    # None: the same as the encoder's
    finetune_heads_learning_rate: float | None = None

    def __post_init__(self) -> None:
        first, last = FIRST_TUNABLE_BLOCK, LAST_TUNABLE_BLOCK
        if self.tune_from_block != 0 and not first <= self.tune_from_block <= last:
            raise ConfigError(
                f"detect.tune_from_block must be 0 (frozen encoder) or {first}-{last}, "
                f"got {self.tune_from_block!r}"
            )
        if self.nms_iou is not None:
            self.nms_iou = check_nms_iou(self.nms_iou)
        if not 0 < self.encoder_rate_scale <= 1:
            raise ConfigError(
                f"detect.encoder_rate_scale must be in (0, 1], got {self.encoder_rate_scale!r}"
            )
        if isinstance(self.box_loss_beta, bool) or not self.box_loss_beta > 0:
            raise ConfigError(f"detect.box_loss_beta must be > 0, got {self.box_loss_beta!r}")
        check_box_loss(self.box_loss)
        momentum = self.ema_momentum
        number = isinstance(momentum, (int, float)) and not isinstance(momentum, bool)
        if not number or not 0 <= momentum < 1:
            raise ConfigError(f"detect.ema_momentum must be in [0, 1) (0: off), got {momentum!r}")
        check_counts(self, ("epochs", "batch_size", "head_convs", "max_detections"), "detect.")
        if not self.aspect_ratios or any(not ratio > 0 for ratio in self.aspect_ratios):
            raise ConfigError(
                f"detect.aspect_ratios must be positive numbers, got {self.aspect_ratios!r}"
            )
        if self.patience < 0:
            raise ConfigError(f"detect.patience must be >= 0 (0: off), got {self.patience!r}")
        crops = self.crop_copies
        if isinstance(crops, bool) or not isinstance(crops, int) or not 0 <= crops <= MAX_CROPS:
            raise ConfigError(
                f"detect.crop_copies must be a whole number 0-{MAX_CROPS}, got {crops!r}"
            )
        size = self.anchor_size
        if size != AUTO_ANCHOR_SIZE and (
            isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size < math.inf
        ):
            raise ConfigError(
                f"detect.anchor_size must be a number > 0 or {AUTO_ANCHOR_SIZE!r}, "
                f"got {self.anchor_size!r}"
            )
        if not 5 <= self.max_level <= 7:
            raise ConfigError(f"detect.max_level must be 5, 6 or 7, got {self.max_level!r}")
        epochs = self.finetune_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(
                f"detect.finetune_epochs must be a whole number >= 0 (0: off), got {epochs!r}"
            )
        for name in ("finetune_learning_rate", "finetune_heads_learning_rate"):
            rate = getattr(self, name)
            if rate is None and name == "finetune_heads_learning_rate":
                continue  # unset: the encoder's rate
            number = isinstance(rate, (int, float)) and not isinstance(rate, bool)
            if not number or not 0 < rate < math.inf:
                raise ConfigError(f"detect.{name} must be > 0, got {rate!r}")
        minutes = self.time_minutes
        number = isinstance(minutes, (int, float)) and not isinstance(minutes, bool)
        if not number or not 0 <= minutes < math.inf:
            raise ConfigError(f"detect.time_minutes must be >= 0 (0: no limit), got {minutes!r}")


TASKS = ("classify", "detect")


@dataclass
class TrainConfig:
    """Everything a run needs; saved fully resolved as ``runs/NAME/config.yaml``."""

    data: str = ""
    out: str = "runs/train"
    task: str = "classify"  # "classify" (one class per image) or "detect" (boxes)
    train_split: str = "train"
    val_split: str = "validation"  # measured once, at the end; never chosen on
    selection_fraction: float = 0.1  # of the training split, stratified: chooses epochs
    ok_class: str = "auto"  # the "no defect" class: a name, "auto" (ok, good, ...) or "none"
    max_escape_rate: float = 0.01  # defects the operating point may call OK (on selection)
    unknown_keep: float = 0.95  # share of selection images not called "unknown"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a .weights.h5 file
    image_size: int = 200
    resize: str = "stretch"  # to the square input: "stretch" or "letterbox" (aspect kept)
    batch_size: int = 16  # per replica: the global batch is batch_size x replicas
    dropout: float = 0.5
    seed: int = 0
    class_weights: str = "auto"  # "auto" (when imbalanced), "balanced" or "none"
    feature_cache: str = ""  # folder for cached backbone features; "" = <out>/../.feature-cache
    head: HeadPhaseConfig = field(default_factory=HeadPhaseConfig)
    finetune: FineTunePhaseConfig = field(default_factory=FineTunePhaseConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
    detect: DetectPhaseConfig = field(default_factory=DetectPhaseConfig)

    def __post_init__(self) -> None:
        if self.class_weights not in ("auto", "balanced", "none"):
            raise ConfigError(
                f"class_weights must be 'auto', 'balanced' or 'none', got {self.class_weights!r}"
            )
        check_counts(self, ("image_size", "batch_size"))
        check_resize(self.resize)
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if not 0.0 <= self.selection_fraction < 0.5:
            raise ConfigError(
                f"selection_fraction must be in [0, 0.5), got {self.selection_fraction!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_NESTED = {
    "head": HeadPhaseConfig,
    "finetune": FineTunePhaseConfig,
    "augment": AugmentConfig,
    "distribute": DistributeConfig,
    "detect": DetectPhaseConfig,
}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from nested plain values (as in a YAML file)."""
    values = dict(values)
    nested = {
        key: _build(cls, dict(values.pop(key) or {}), key)
        for key, cls in _NESTED.items()
        if key in values
    }
    return _build(TrainConfig, {**values, **nested}, "config")


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base`` (dicts merged, other values replaced)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


DEFAULT_PRESET = "default"  # the dataclass defaults: no file


def preset_names() -> list[str]:
    folder = resources.files("defectscope") / "presets"
    shipped = (p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted({DEFAULT_PRESET, *shipped})


def _read_yaml(text: str, where: str | Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})") from None
    if not isinstance(loaded, dict):
        kind = type(loaded).__name__
        raise ConfigError(f"{where}: expected a mapping of config keys, got {kind}")
    return loaded


def read_config_file(path_or_preset: str | Path) -> dict[str, Any]:
    """Values of a YAML file, or of a preset shipped with the package (``robust``, ``demo``...)."""
    if str(path_or_preset) == DEFAULT_PRESET:
        return {}
    path = Path(path_or_preset)
    if path.is_file():
        return _read_yaml(path.read_text(), path)
    preset = resources.files("defectscope") / "presets" / f"{path_or_preset}.yaml"
    if not preset.is_file():
        raise ConfigError(
            f"config {str(path_or_preset)!r} is neither a file nor a preset {preset_names()}"
        )
    return _read_yaml(preset.read_text(), f"preset {path_or_preset}")


# Command-line flags that set a nested key: --epochs is finetune.epochs, and so on.
FLAG_KEYS = {
    "epochs": ("finetune", "epochs"),
    "head_epochs": ("head", "epochs"),
    "strategy": ("distribute", "strategy"),
    "cpu_devices": ("distribute", "cpu_devices"),
    "mixed_precision": ("distribute", "mixed_precision"),
    "xla": ("distribute", "xla"),
}


def _nest_flags(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in FLAG_KEYS:
            section, name = FLAG_KEYS[key]
            nested.setdefault(section, {})[name] = value
        else:
            nested = merge(nested, {key: value})
    return nested


def resolve_config(config_file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults <- config file (or preset) <- explicit overrides (None values are ignored).

    Overrides are config keys (``finetune={"epochs": 3}``) or the flat flag names of
    :data:`FLAG_KEYS` (``epochs=3``).
    """
    values = TrainConfig().to_dict()
    if config_file:
        values = merge(values, read_config_file(config_file))
    values = merge(values, _nest_flags(overrides))
    return config_from_dict(values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def load_config(path: str | Path) -> TrainConfig:
    return config_from_dict(_read_yaml(Path(path).read_text(), path))
