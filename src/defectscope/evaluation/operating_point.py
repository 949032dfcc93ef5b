"""Defect or OK: the plant's question, at a chosen rate of escapes.

When one class means "no defect" (``--ok-class NAME``, or a class named ok, good, normal,
no_defect...), each image gets a defect score, 1 - P(OK), and a threshold turns it into
``defect: true/false``. The threshold is the highest one that lets at most ``max_escape_rate``
of the defective images through as OK (escapes), so it rejects as few OK parts as it can (false
rejects); it is chosen on the selection set and stored with the model.
"""

from __future__ import annotations

import math

import numpy as np

from defectscope.core.errors import ConfigError

OK_NAMES = frozenset(
    {
        "ok",
        "good",
        "normal",
        "pass",
        "clean",
        "free",
        "defect_free",
        "defect-free",
        "defectfree",
        "no_defect",
        "no-defect",
        "nodefect",
        "non_defective",
        "non-defective",
        "nondefective",
    }
)


def find_ok_class(classes: list[str], requested: str = "auto") -> str | None:
    """The class that means "no defect": ``requested`` by name, or (``auto``) the one class
    named like it; None when there is none (or ``requested`` is ``none``)."""
    if requested in ("", "none"):
        return None
    if requested != "auto":
        if requested not in classes:
            raise ConfigError(f"ok_class {requested!r} is not a class; the classes are {classes}")
        return requested
    found = [name for name in classes if name.lower() in OK_NAMES]
    return found[0] if len(found) == 1 else None


def defect_scores(probabilities: np.ndarray, ok_index: int) -> np.ndarray:
    return 1.0 - np.asarray(probabilities)[:, ok_index]


def choose_threshold(scores: np.ndarray, is_defect: np.ndarray, max_escape_rate: float) -> float:
    """The highest threshold with at most ``max_escape_rate`` of the defects below it."""
    if not 0.0 <= max_escape_rate < 1.0:
        raise ConfigError(f"max_escape_rate must be in [0, 1), got {max_escape_rate!r}")
    defects = np.sort(np.asarray(scores)[np.asarray(is_defect, bool)])
    if not len(defects):
        raise ConfigError("no defective image to choose a threshold on")
    allowed = math.floor(max_escape_rate * len(defects) + 1e-9)  # escapes tolerated
    return float(defects[allowed]) if allowed < len(defects) else float(defects[-1])


def rates(scores: np.ndarray, is_defect: np.ndarray, threshold: float) -> dict:
    """Escape and false-reject rates, and their counts, at ``threshold``."""
    scores, is_defect = np.asarray(scores), np.asarray(is_defect, bool)
    called_defect = scores >= threshold
    escapes = int(np.sum(is_defect & ~called_defect))
    false_rejects = int(np.sum(~is_defect & called_defect))
    defects, oks = int(is_defect.sum()), int((~is_defect).sum())
    return {
        "threshold": float(threshold),
        "escapes": escapes,
        "defects": defects,
        "escape_rate": escapes / defects if defects else 0.0,
        "false_rejects": false_rejects,
        "oks": oks,
        "false_reject_rate": false_rejects / oks if oks else 0.0,
    }


def curves(scores: np.ndarray, is_defect: np.ndarray) -> dict:
    """ROC and precision-recall curves of the defect score (scikit-learn), with their areas."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(is_defect, scores)
    precision, recall, _ = precision_recall_curve(is_defect, scores)
    return {
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(auc(fpr, tpr))},
        "pr": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "average_precision": float(average_precision_score(is_defect, scores)),
        },
    }
