"""``evaluate``: a model on one split of a dataset, with every report file."""

from __future__ import annotations

from pathlib import Path

from defectscope.data.pipeline import open_source
from defectscope.evaluation.metrics import predict_source
from defectscope.evaluation.report import write_evaluation
from defectscope.inference.classifier import Classifier, load_model


class ClassMismatchError(ValueError):
    """The data's classes are not the model's."""


def evaluate(
    model: str | Path | Classifier,
    data: str | Path,
    split: str = "validation",
    out: str | Path = "runs/evaluate",
    batch_size: int = 32,
    localization: bool = False,
    corruptions: list[str] | None = None,
    severities: list[int] | None = None,
) -> dict:
    """Evaluate a run folder, ``.keras`` file or loaded classifier; returns the metrics."""
    classifier = model if isinstance(model, Classifier) else load_model(model)
    source = open_source(data, split)
    if list(source.classes) != classifier.classes:
        raise ClassMismatchError(
            f"data classes {list(source.classes)} differ from the model's {classifier.classes}"
        )
    result = predict_source(classifier.predict_images, source, classifier.image_size, batch_size)
    metrics = write_evaluation(result, out, f"{classifier.path} on {data} ({split})")
    if localization:
        from defectscope.atomic_io import atomic_write_json
        from defectscope.deploy.gradcam import keras_model_for
        from defectscope.evaluation.localization import pointing_game

        keras_model = keras_model_for(classifier)
        metrics["localization"] = pointing_game(keras_model, source, classifier.image_size)
        atomic_write_json(Path(out) / "metrics.json", metrics)
    if corruptions:
        metrics["robustness"] = write_robustness(
            classifier, source, corruptions, severities or [1, 2, 3, 4, 5], Path(out), batch_size
        )
    return metrics


def write_robustness(classifier, source, names, severities, out: Path, batch_size: int) -> dict:
    """``robustness.json`` and ``robustness.png``: accuracy per corruption and severity."""
    from defectscope.atomic_io import atomic_write_json
    from defectscope.evaluation.corruptions import SEVERITIES, robustness
    from defectscope.evaluation.report import plot_robustness

    table, mean = robustness(
        classifier.predict_images, source, classifier.image_size, names, severities, batch_size
    )
    report = {
        "corruptions": table,
        "mean_corruption_accuracy": mean,
        "severities": list(severities),
        "parameters": {name: list(SEVERITIES[name]) for name in names},
    }
    atomic_write_json(out / "robustness.json", report)
    plot_robustness(table, mean, out / "robustness.png")
    return report
