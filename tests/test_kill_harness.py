"""The kill harness in reduced form: convert and predict killed at random moments."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from defectscope.reliability import kill_convert, kill_predict

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
