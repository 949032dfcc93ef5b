"""Defect or OK: the OK class, the threshold for a chosen escape rate, and the rates."""

from __future__ import annotations

import numpy as np
import pytest

from defectscope.core.errors import ConfigError
from defectscope.evaluation.operating_point import (
    choose_threshold,
    curves,
    defect_scores,
    find_ok_class,
    rates,
)


def test_the_ok_class_is_found_by_name_or_given() -> None:
    assert find_ok_class(["dent", "No_Defect", "rust"]) == "No_Defect"
    assert find_ok_class(["dent", "rust"]) is None
    assert find_ok_class(["ok", "good", "dent"]) is None  # two candidates: ask the user
    assert find_ok_class(["dent", "fine"], "fine") == "fine"
    assert find_ok_class(["ok", "dent"], "none") is None
    with pytest.raises(ConfigError, match="'fine' is not a class"):
        find_ok_class(["ok", "dent"], "fine")


def test_the_threshold_meets_the_escape_rate_with_fewest_false_rejects() -> None:
    rng = np.random.default_rng(0)
    defects = rng.uniform(0.3, 1.0, 200)
    oks = rng.uniform(0.0, 0.5, 300)
    scores = np.r_[defects, oks]
    is_defect = np.r_[np.ones(200, bool), np.zeros(300, bool)]
    for rate in (0.0, 0.01, 0.05):
        threshold = choose_threshold(scores, is_defect, rate)
        found = rates(scores, is_defect, threshold)
        assert found["escape_rate"] <= rate
        # one step higher would let one more defect escape than allowed
        higher = np.sort(defects)[found["escapes"] + 1]
        assert rates(scores, is_defect, higher)["escapes"] > rate * 200
    assert choose_threshold(scores, is_defect, 0.0) == defects.min()


def test_defect_scores_and_curves() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # class 0 is OK
    scores = defect_scores(probabilities, 0)
    np.testing.assert_allclose(scores, [0.1, 0.8, 0.4])
    shapes = curves(scores, np.array([False, True, True]))
    assert shapes["roc"]["auc"] == 1.0 and shapes["pr"]["average_precision"] == 1.0
