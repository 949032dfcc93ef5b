"""Training configuration: dataclasses, YAML presets, overrides and the resolved config.yaml."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from defectscope.data.augment import AugmentConfig
from defectscope.training.distribute import DistributeConfig


@dataclass
class HeadPhaseConfig:
    """Phase 1: the head alone, on backbone features computed once and cached."""

    epochs: int = 150
    learning_rate: float = 1e-3
    batch_size: int = 32
    label_smoothing: float = 0.0


@dataclass
class FineTunePhaseConfig:
    """Phase 2: top blocks unfrozen (BatchNorm in inference mode), augmentation on."""

    epochs: int = 8
    learning_rate: float = 2e-4  # peak of the cosine schedule
    warmup_epochs: float = 0.5
    unfreeze_from: str = "block9"  # an Xception block, "all" or "none" (skip phase 2)
    patience: int = 3  # early stopping on validation accuracy
    label_smoothing: float = 0.1


@dataclass
class TrainConfig:
    """Everything a run needs; saved fully resolved as ``runs/NAME/config.yaml``."""

    data: str = ""
    out: str = "runs/train"
    train_split: str = "train"
    val_split: str = "validation"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a .weights.h5 file
    image_size: int = 200
    batch_size: int = 16  # per replica: the global batch is batch_size x replicas
    dropout: float = 0.5
    seed: int = 0
    class_weights: str = "auto"  # "auto" (when imbalanced), "balanced" or "none"
    feature_cache: str = ""  # folder for cached backbone features; "" = <out>/../.feature-cache
    head: HeadPhaseConfig = field(default_factory=HeadPhaseConfig)
    finetune: FineTunePhaseConfig = field(default_factory=FineTunePhaseConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)

    def __post_init__(self) -> None:
        if self.class_weights not in ("auto", "balanced", "none"):
            raise ValueError(
                f"class_weights must be 'auto', 'balanced' or 'none', got {self.class_weights!r}"
            )
        for name in ("image_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_NESTED = {
    "head": HeadPhaseConfig,
    "finetune": FineTunePhaseConfig,
    "augment": AugmentConfig,
    "distribute": DistributeConfig,
}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown}; known: {sorted(known)}")
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


def preset_names() -> list[str]:
    folder = resources.files("defectscope") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def read_config_file(path_or_preset: str | Path) -> dict[str, Any]:
    """Values of a YAML file, or of a preset shipped with the package (``default``, ``demo``...)."""
    path = Path(path_or_preset)
    if not path.is_file():
        preset = resources.files("defectscope") / "presets" / f"{path_or_preset}.yaml"
        if not preset.is_file():
            raise FileNotFoundError(
                f"config {str(path_or_preset)!r} is neither a file nor a preset {preset_names()}"
            )
        return yaml.safe_load(preset.read_text()) or {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def resolve_config(config_file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults <- config file (or preset) <- explicit overrides (None values are ignored)."""
    values = TrainConfig().to_dict()
    if config_file:
        values = merge(values, read_config_file(config_file))
    values = merge(values, {k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    from defectscope.atomic_io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def load_config(path: str | Path) -> TrainConfig:
    return config_from_dict(yaml.safe_load(Path(path).read_text()))
