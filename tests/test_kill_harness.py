"""The kill harness in reduced form: convert, predict and train killed at random moments."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from benchmarks.kill_harness import kill_convert, kill_predict, kill_train

from tests.helpers import TINY_CONFIG_YAML

pytestmark = pytest.mark.slow


def test_killed_convert_and_predict_leave_nothing_half_written(
    synthetic_root: Path, tiny_run: Path, tmp_path: Path
) -> None:
    rng = random.Random(0)
    convert = kill_convert(synthetic_root, tmp_path, kills=3, rng=rng)
    assert convert.kills == 3 and convert.problems == [] and convert.identical
    images = sorted((synthetic_root / "validation" / "images").glob("*"))
    predict = kill_predict(tiny_run, images, tmp_path, kills=3, rng=rng)
    assert predict.kills == 3 and predict.problems == [] and predict.identical


def test_killed_and_resumed_training_equals_an_uninterrupted_run(
    synthetic_records: Path, tmp_path: Path
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG_YAML)
    train = kill_train(synthetic_records, str(config), tmp_path, kills=2, rng=random.Random(1))
    assert train.kills == 2 and train.problems == [], train.problems
    assert train.detail["max_weight_difference"] == 0.0 and train.identical
