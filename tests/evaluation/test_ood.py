"""Unknown-image scores separate what the model knows from what it does not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from defectscope.core.errors import ConfigError
from defectscope.evaluation.ood import (
    MahalanobisScorer,
    energy_scores,
    msp_scores,
    threshold_at,
)


def test_msp_and_energy() -> None:
    np.testing.assert_allclose(msp_scores(np.array([[0.9, 0.1], [0.5, 0.5]])), [0.1, 0.5])
    confident, unsure = energy_scores(np.array([[10.0, 0.0], [0.1, 0.0]]))
    assert confident < unsure


def test_mahalanobis_flags_features_far_from_every_class() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 64))
    labels = np.repeat(np.arange(3), 200)
    known = centres[labels] + rng.normal(0, 1, (600, 64))
    scorer = MahalanobisScorer.fit(known, labels, dims=32)
    inside = scorer.scores(centres[labels[:90]] + rng.normal(0, 1, (90, 64)))
    outside = scorer.scores(rng.normal(0, 5, (90, 64)))
    area = roc_auc_score(np.r_[np.zeros(90), np.ones(90)], np.r_[inside, outside])
    assert area > 0.99
    threshold = threshold_at(inside, 0.95)
    assert np.mean(inside > threshold) == pytest.approx(0.05, abs=0.02)
    with pytest.raises(ConfigError, match="kept share"):
        threshold_at(inside, 0.2)
