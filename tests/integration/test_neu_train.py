"""Real NEU-DET with the shared ImageNet weights: phase 1 on cached features, the first
fine-tuning epoch, and the whole default recipe against its own head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from defectscope.evaluation.evaluate import evaluate
from defectscope.training.config import resolve_config
from defectscope.training.trainer import train

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def neu_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runs folder for this module, so both runs share one feature cache."""
    return tmp_path_factory.mktemp("neu-runs")


def test_head_on_cached_features_reaches_97_5_percent(
    neu_records: tuple[Path, dict], xception_weights: Path, neu_runs: Path
) -> None:
    """The phase-1 mechanism on clean features alone (the default head also learns from
    augmented copies, which costs it about half a point of clean accuracy; see below)."""
    records, _ = neu_records
    config = resolve_config(
        data=str(records),
        out=str(neu_runs / "head-only"),
        weights=str(xception_weights),
        head={"augmented_copies": 0},
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


def test_fine_tuning_epoch_one_keeps_what_the_head_learned(
    neu_records: tuple[Path, dict], xception_weights: Path, neu_runs: Path
) -> None:
    """Phase 2 starts where phase 1 ended: after its first epoch the model is not more than one
    point worse on validation. Measured before the fixes: 98.3% -> 93.9% (BatchNorm drift), then
    98.06% -> 92.5% (a head that had never seen a flipped, rotated or noisy image)."""
    records, _ = neu_records
    config = resolve_config(
        data=str(records),
        out=str(neu_runs / "one-epoch"),
        weights=str(xception_weights),
        finetune={"epochs": 1},
    )
    result = train(config)
    # weights/last.keras is the model after fine-tuning epoch 1, whichever the run kept
    after_one_epoch = evaluate(
        result.run_dir / "weights" / "last.keras", records, out=neu_runs / "epoch-one"
    )
    head = result.state.head_validation_accuracy
    assert after_one_epoch["accuracy"] >= head - 0.01, (after_one_epoch["accuracy"], head)


def test_the_default_recipe_ends_above_its_own_head(
    neu_records: tuple[Path, dict], xception_weights: Path, neu_runs: Path
) -> None:
    """The whole default recipe, chosen on the selection set and measured on validation."""
    records, _ = neu_records
    config = resolve_config(
        data=str(records), out=str(neu_runs / "default"), weights=str(xception_weights)
    )
    result = train(config)
    head = result.state.head_validation_accuracy
    assert result.metrics["accuracy"] > head, (result.metrics["accuracy"], head)
    assert result.metrics["accuracy"] >= 0.975, result.metrics
    assert result.metrics["selected_on"].startswith("selection"), result.metrics
