"""Scores computed from a classifier's outputs: probabilities, and how unusual an image is."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def msp_scores(probabilities: np.ndarray) -> np.ndarray:
    """1 minus the largest class probability (higher: less sure)."""
    return 1.0 - np.asarray(probabilities).max(axis=1)


def energy_scores(logits: np.ndarray) -> np.ndarray:
    """Minus the log-sum-exp of the logits (higher: less like the training images)."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))


def unknown_scores(kind: str, probabilities: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
    """The score named ``kind`` (``energy`` needs logits; ``msp`` needs probabilities only)."""
    if kind == "energy" and logits is not None:
        return energy_scores(logits)
    return msp_scores(probabilities)
