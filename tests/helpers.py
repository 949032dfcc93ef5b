"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from defectscope.training.config import TrainConfig, resolve_config

# A run that takes seconds: random 71 px Xception, 2 head epochs, 4 fine-tuning epochs.
TINY_CONFIG_YAML = (
    "weights: none\nimage_size: 71\nbatch_size: 8\nhead: {epochs: 2, batch_size: 8}\n"
    "finetune: {epochs: 4, unfreeze_from: block14, patience: 0}\n"
)


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """A run that takes seconds: random 71 px Xception, 2 head epochs, 1 fine-tuning epoch."""
    values = {
        "data": str(data),
        "out": str(out),
        "weights": "none",
        "image_size": 71,
        "batch_size": 8,
        "head": {"epochs": 2, "batch_size": 8},
        "finetune": {"epochs": 1, "unfreeze_from": "block14", "patience": 0},
    }
    values.update(overrides)
    return resolve_config(**values)


def cli_command(*args: str) -> list[str]:
    """``python -m defectscope ARGS`` with this interpreter."""
    return [sys.executable, "-m", "defectscope", *args]


def results_rows(run: Path, phase: str | None = None) -> list[dict[str, str]]:
    """Rows of a run's results.csv (of one phase)."""
    path = run / "results.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [r for r in csv.DictReader(handle) if phase is None or r["phase"] == phase]
