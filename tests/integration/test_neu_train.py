"""Real NEU-DET with the shared ImageNet weights: phase 1 on cached features, and the whole
default recipe against its own head (and its first fine-tuning epoch against that head)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import pytest

from defectscope.evaluation.evaluate import evaluate
from defectscope.training.callbacks import save_for_inference
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


class SaveAfterEpochOne(keras.callbacks.Callback):
    """Saves the model as fine-tuning epoch 1 left it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 0:
            save_for_inference(self.model, self.path)


def test_the_default_recipe_ends_above_its_own_head(
    neu_records: tuple[Path, dict],
    xception_weights: Path,
    neu_runs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole default recipe, chosen on the selection set and measured on validation.

    On the way, phase 2 starts where phase 1 ended: after its first epoch the model is not more
    than one point worse on validation. Measured before the fixes: 98.3% -> 93.9% (BatchNorm
    drift), then 98.06% -> 92.5% (a head that had never seen a flipped, rotated or noisy image).
    One run checks both (a separate one-epoch run cost CI a quarter of an hour)."""
    import defectscope.training.finetune as finetune

    records, _ = neu_records
    epoch_one = neu_runs / "after-epoch-one" / "model.keras"
    callbacks = finetune._callbacks
    monkeypatch.setattr(
        finetune,
        "_callbacks",
        lambda *args: [*callbacks(*args), SaveAfterEpochOne(epoch_one)],
    )
    config = resolve_config(
        data=str(records), out=str(neu_runs / "default"), weights=str(xception_weights)
    )
    result = train(config)
    head = result.state.head_validation_accuracy
    shutil.copy(result.run_dir / "weights" / "metadata.json", epoch_one.parent)
    after_one_epoch = evaluate(epoch_one, records, out=neu_runs / "epoch-one")
    assert after_one_epoch["accuracy"] >= head - 0.01, (after_one_epoch["accuracy"], head)
    assert result.metrics["accuracy"] > head, (result.metrics["accuracy"], head)
    assert result.metrics["accuracy"] >= 0.975, result.metrics
    assert result.metrics["selected_on"].startswith("selection"), result.metrics
