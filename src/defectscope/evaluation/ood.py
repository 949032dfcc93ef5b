"""Out-of-distribution scores: how unlike its training images an image is (higher = stranger).

- ``msp``: 1 minus the largest class probability;
- ``energy``: minus the log-sum-exp of the logits;
- ``mahalanobis``: the squared Mahalanobis distance of the pooled backbone features to the
  nearest class mean, with one shared covariance (Ledoit-Wolf shrinkage) fitted on the training
  features, computed in a reduced space (the top principal components) to stay cheap.

A threshold is calibrated on held-out in-distribution images so that a chosen share of them
(the true-positive rate, e.g. 95%) stays below it; images above it are answered "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defectscope.core.errors import ConfigError
from defectscope.inference.scores import energy_scores, msp_scores

__all__ = ["MahalanobisScorer", "energy_scores", "msp_scores", "threshold_at"]


@dataclass
class MahalanobisScorer:
    """Class means and a shared precision matrix in a PCA-reduced feature space."""

    mean: np.ndarray  # (D,) feature mean removed before projecting
    projection: np.ndarray  # (D, K) principal directions
    centres: np.ndarray  # (C, K) projected class means
    precision: np.ndarray  # (K, K)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, dims: int = 128) -> MahalanobisScorer:
        from sklearn.covariance import LedoitWolf

        features = np.asarray(features, dtype=np.float64)
        classes = np.unique(labels)
        if len(classes) < 2 or len(features) < 3:
            raise ConfigError("the unknown-image score needs two classes and three images")
        mean = features.mean(axis=0)
        centred = features - mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = vt[: min(dims, vt.shape[0])].T
        reduced = centred @ projection
        centres = np.stack([reduced[labels == c].mean(axis=0) for c in classes])
        within = reduced - centres[np.searchsorted(classes, labels)]
        precision = LedoitWolf().fit(within).precision_
        return cls(mean, projection, centres, precision)

    def scores(self, features: np.ndarray) -> np.ndarray:
        reduced = (np.asarray(features, dtype=np.float64) - self.mean) @ self.projection
        gaps = reduced[:, None, :] - self.centres[None, :, :]
        distances = np.einsum("nck,kl,ncl->nc", gaps, self.precision, gaps)
        return distances.min(axis=1)


def threshold_at(scores: np.ndarray, keep: float = 0.95) -> float:
    """The score below which ``keep`` of these in-distribution images fall."""
    if not 0.5 <= keep < 1.0:
        raise ConfigError(f"the kept share must be in [0.5, 1), got {keep!r}")
    return float(np.quantile(np.asarray(scores), keep))
