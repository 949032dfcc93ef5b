"""Real NEU-DET with the shared ImageNet weights: the head on cached features (phase 1 only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from defectscope.training.config import resolve_config
from defectscope.training.trainer import train

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_head_on_cached_features_reaches_97_5_percent(
    neu_records: tuple[Path, dict], xception_weights: Path, tmp_path: Path
) -> None:
    records, _ = neu_records
    config = resolve_config(
        data=str(records),
        out=str(tmp_path / "runs" / "head-only"),
        weights=str(xception_weights),
        finetune={"epochs": 0},
    )
    result = train(config)
    state = json.loads((result.run_dir / "state.json").read_text())
    assert state["head_validation_accuracy"] >= 0.975, state
    # the full model, through the evaluation path, agrees with the head on cached features
    assert result.metrics["accuracy"] >= 0.975, result.metrics
    assert abs(result.metrics["accuracy"] - state["head_validation_accuracy"]) <= 1 / 360 + 1e-9
    assert result.metrics["num_images"] == 360
    assert state["head_speedup"] > 20  # cached epochs against one backbone pass per epoch
