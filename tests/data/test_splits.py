"""Stratified, seeded, duplicate-aware held-out sets and folds."""

from __future__ import annotations

import pytest

from defectscope.core.errors import ConfigError
from defectscope.data.splits import SplitItem, folds, holdout, too_small


def items(counts: dict[str, int], duplicates: int = 0) -> list[SplitItem]:
    """``counts`` images per class; the first ``duplicates`` of each class share one content."""
    made = []
    for label, count in counts.items():
        for i in range(count):
            content = f"{label}-same" if i < duplicates else f"{label}-{i}"
            made.append(SplitItem(f"{label}/{i}.jpg", label, content))
    return made


def test_every_class_gets_its_share_and_keeps_training_images() -> None:
    held = holdout(items({"a": 100, "b": 10, "c": 2, "d": 1}), 0.2)
    per_class = {label: sum(k.startswith(label) for k in held) for label in "abcd"}
    assert per_class == {"a": 20, "b": 2, "c": 1, "d": 0}
    assert too_small(items({"a": 100, "d": 1})) == {"d": 1}


def test_identical_files_stay_on_one_side() -> None:
    data = items({"a": 40, "b": 40}, duplicates=5)
    for seed in range(20):
        held = holdout(data, 0.2, seed)
        for label in "ab":
            copies = {f"{label}/{i}.jpg" in held for i in range(5)}
            assert len(copies) == 1, seed  # all five copies held out, or none


def test_seeded_and_stable_when_images_are_added() -> None:
    before = holdout(items({"a": 200}), 0.1, seed=3)
    assert before == holdout(items({"a": 200}), 0.1, seed=3)
    assert before != holdout(items({"a": 200}), 0.1, seed=4)
    after = holdout(items({"a": 210}), 0.1, seed=3)  # ten more images
    assert len(before - after) <= 2  # almost every held-out image stays held out


def test_folds_are_disjoint_cover_everything_and_are_stratified() -> None:
    data = items({"a": 50, "b": 13}, duplicates=3)
    parts = folds(data, 5)
    assert set().union(*parts) == {i.key for i in data}
    assert sum(len(p) for p in parts) == len(data)
    for part in parts:
        assert 9 <= sum(k.startswith("a") for k in part) <= 11
        assert 2 <= sum(k.startswith("b") for k in part) <= 4
    with pytest.raises(ConfigError, match="folds must be >= 2, got 1"):
        folds(data, 1)
