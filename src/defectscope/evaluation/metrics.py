"""Predictions over a data source and their metrics (scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from defectscope.data.pipeline import DataSource, create_dataset

MAX_KEPT_MISTAKES = 64


@dataclass
class EvaluationResult:
    """True labels, predicted probabilities and ids of one split, with the wrong images kept."""

    classes: list[str]
    labels: np.ndarray  # (N,) int
    probabilities: np.ndarray  # (N, C) float
    source_ids: list[str]
    mistake_images: dict[str, np.ndarray] = field(default_factory=dict)  # id -> uint8 image

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def predict_source(
    predict_batch, source: DataSource, image_size: int, batch_size: int = 32
) -> EvaluationResult:
    """Run ``predict_batch`` (images in [0, 255] -> probabilities) over every image of a split."""
    dataset = create_dataset(source, image_size=image_size, batch_size=batch_size, with_ids=True)
    labels, probabilities, ids = [], [], []
    mistakes: dict[str, np.ndarray] = {}
    for images, batch_labels, batch_ids in dataset:
        batch_probabilities = np.asarray(predict_batch(images))
        batch_labels = batch_labels.numpy()
        wrong = np.flatnonzero(batch_probabilities.argmax(axis=1) != batch_labels)
        for index in wrong:
            if len(mistakes) < MAX_KEPT_MISTAKES:
                image = np.clip(images[index].numpy(), 0, 255).astype(np.uint8)
                mistakes[batch_ids[index].numpy().decode()] = image
        labels.append(batch_labels)
        probabilities.append(batch_probabilities)
        ids.extend(i.decode() for i in batch_ids.numpy())
    return EvaluationResult(
        classes=list(source.classes),
        labels=np.concatenate(labels),
        probabilities=np.concatenate(probabilities),
        source_ids=ids,
        mistake_images=mistakes,
    )


def compute_metrics(result: EvaluationResult) -> dict:
    """``metrics.json`` content: accuracy, macro F1, confusion matrix (rows = true), per class."""
    indices = list(range(len(result.classes)))
    y_true, y_pred = result.labels, result.predictions
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=indices, average="macro", zero_division=0)
        ),
        "num_images": len(y_true),
        "num_errors": int((y_true != y_pred).sum()),
        "classes": list(result.classes),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(result.classes)
        },
    }


def misclassified_rows(result: EvaluationResult) -> list[dict]:
    """One row per wrong prediction: id, true and predicted class, confidence."""
    rows = []
    for index in np.flatnonzero(result.predictions != result.labels):
        predicted = int(result.predictions[index])
        rows.append(
            {
                "source_id": result.source_ids[index],
                "true": result.classes[int(result.labels[index])],
                "predicted": result.classes[predicted],
                "confidence": float(result.probabilities[index, predicted]),
                "true_probability": float(result.probabilities[index, int(result.labels[index])]),
            }
        )
    return rows
