"""Predictions over a data source and their metrics (scikit-learn)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from defectscope.data.pipeline import DataSource, create_dataset

MAX_KEPT_MISTAKES = 64  # the most confident mistakes are kept as pictures


@dataclass
class EvaluationResult:
    """True labels, predicted probabilities and ids of one split, with the wrong images kept."""

    classes: list[str]
    labels: np.ndarray  # (N,) int
    probabilities: np.ndarray  # (N, C) float
    source_ids: list[str]
    mistake_images: dict[str, np.ndarray] = field(default_factory=dict)  # id -> uint8 image
    logits: np.ndarray | None = None  # (N, C) for a model that outputs logits

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def predict_source(classifier, source: DataSource, batch_size: int = 32) -> EvaluationResult:
    """Run ``classifier`` over every image of a split: probabilities (and logits), labels, ids,
    and pictures of the most confident mistakes."""
    dataset = create_dataset(
        source,
        image_size=classifier.image_size,
        batch_size=batch_size,
        with_ids=True,
        resize=classifier.resize,
    )
    labels, probabilities, logits, ids = [], [], [], []
    kept: list[tuple[float, str, np.ndarray]] = []  # a heap of the most confident mistakes
    for images, batch_labels, batch_ids in dataset:
        batch_probabilities, batch_logits = classifier.predict_outputs(images)
        logits.append(batch_logits)
        batch_labels = batch_labels.numpy()
        wrong = np.flatnonzero(batch_probabilities.argmax(axis=1) != batch_labels)
        for index in wrong:
            confidence = float(batch_probabilities[index].max())
            if len(kept) == MAX_KEPT_MISTAKES and confidence <= kept[0][0]:
                continue
            image = np.clip(images[index].numpy(), 0, 255).astype(np.uint8)
            entry = (confidence, batch_ids[index].numpy().decode(), image)
            if len(kept) < MAX_KEPT_MISTAKES:
                heapq.heappush(kept, entry)
            else:
                heapq.heapreplace(kept, entry)
        labels.append(batch_labels)
        probabilities.append(batch_probabilities)
        ids.extend(i.decode() for i in batch_ids.numpy())
    return EvaluationResult(
        classes=list(source.classes),
        labels=np.concatenate(labels),
        probabilities=np.concatenate(probabilities),
        source_ids=ids,
        mistake_images={source_id: image for _, source_id, image in kept},
        logits=None if logits[0] is None else np.concatenate(logits),
    )


def compute_metrics(result: EvaluationResult) -> dict:
    """``metrics.json`` content: accuracy, macro F1, confusion matrix (rows = true), per class."""
    from sklearn.metrics import (  # scikit-learn takes a second to import: only when needed
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    indices = list(range(len(result.classes)))
    y_true, y_pred = result.labels, result.predictions
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred))
        if len(set(y_true.tolist())) > 1
        else float(accuracy_score(y_true, y_pred)),
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
