"""Stratified, seeded, duplicate-aware splits: held-out sets and K folds.

Used for the validation split of a folder-per-class dataset, for the selection split carved from
the training split (model selection), and for K-fold cross-validation. Every class gets its share
(at least one image when it has two or more); byte-identical files form one group that is never
split across sets; each group's place comes from a hash of its content and the seed, so adding
images moves almost nothing.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from defectscope.core.errors import ConfigError


@dataclass(frozen=True)
class SplitItem:
    """One image: its id, its class and its content key (equal keys: identical bytes)."""

    key: str
    label: str
    content: str


def _rank(content: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{content}".encode()).hexdigest()


def _groups_by_class(items: Iterable[SplitItem], seed: int) -> dict[str, list[list[str]]]:
    """Per class, its groups of identical files, in the seeded hash order."""
    grouped: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        grouped[item.label][item.content].append(item.key)
    return {
        label: [sorted(groups[c]) for c in sorted(groups, key=lambda c: _rank(c, seed))]
        for label, groups in grouped.items()
    }


def holdout(items: Iterable[SplitItem], fraction: float, seed: int = 0) -> set[str]:
    """Keys of a stratified held-out set of about ``fraction`` of each class.

    A class of two or more images gives at least one and keeps at least one; a class of one
    image gives none (see :func:`too_small`).
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"a split fraction must be in [0, 1), got {fraction!r}")
    held: set[str] = set()
    for groups in _groups_by_class(items, seed).values():
        size = sum(len(g) for g in groups)
        target = 0 if size < 2 or fraction == 0 else min(max(1, round(fraction * size)), size - 1)
        taken = 0
        for group in groups:
            if taken >= target:
                break
            if taken + len(group) <= size - 1:
                held.update(group)
                taken += len(group)
    return held


def folds(items: Iterable[SplitItem], count: int, seed: int = 0) -> list[set[str]]:
    """``count`` disjoint stratified folds covering every key (duplicates in one fold)."""
    if count < 2:
        raise ConfigError(f"folds must be >= 2, got {count!r}")
    result: list[set[str]] = [set() for _ in range(count)]
    for groups in _groups_by_class(items, seed).values():
        sizes = [0] * count
        for group in sorted(groups, key=len, reverse=True):  # big groups first, then balance
            smallest = min(range(count), key=lambda f: (sizes[f], f))
            result[smallest].update(group)
            sizes[smallest] += len(group)
    return result


def too_small(items: Iterable[SplitItem], minimum: int = 2) -> dict[str, int]:
    """Classes with fewer than ``minimum`` images, which no held-out set can represent."""
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item.label] += 1
    return {label: n for label, n in sorted(counts.items()) if n < minimum}
