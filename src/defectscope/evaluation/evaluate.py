"""``evaluate``: a model on one split of a dataset, with every report file."""

from __future__ import annotations

from pathlib import Path

from defectscope.core.atomic_io import atomic_write_json
from defectscope.core.errors import ConfigError
from defectscope.core.files import prepare_output_folder
from defectscope.data.pipeline import DataSource, open_source
from defectscope.evaluation.corruptions import SEVERITIES, robustness
from defectscope.evaluation.localization import pointing_game
from defectscope.evaluation.metrics import predict_source
from defectscope.evaluation.report import is_evaluation_file, plot_robustness, write_evaluation
from defectscope.inference.classifier import Classifier, load_model


class ClassMismatchError(ConfigError):
    """The data's classes are not the model's."""


def evaluate(
    model: str | Path | Classifier,
    data: str | Path | DataSource,
    split: str = "validation",
    out: str | Path = "runs/evaluate",
    batch_size: int = 32,
    localization: bool = False,
    corruptions: list[str] | None = None,
    severities: list[int] | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Evaluate a run folder, ``.keras`` file, export or loaded classifier; returns the metrics.

    ``data`` is a dataset root, a TFRecord folder or an opened :class:`DataSource` (whose own
    split is used). ``out`` may hold earlier evaluation files; other files are refused unless
    ``overwrite``.
    """
    out = prepare_output_folder(out, "evaluation files", is_evaluation_file, overwrite)
    classifier = model if isinstance(model, Classifier) else load_model(model)
    source = data if isinstance(data, DataSource) else open_source(data, split)
    if list(source.classes) != classifier.classes:
        raise ClassMismatchError(
            f"data classes {list(source.classes)} differ from the model's {classifier.classes}"
        )
    result = predict_source(classifier.predict_arrays, source, classifier.image_size, batch_size)
    title = title or f"{classifier.path} on {source.path} ({source.split})"
    metrics = write_evaluation(result, out, title)
    if localization:
        metrics["localization"] = pointing_game(classifier, source)
        atomic_write_json(out / "metrics.json", metrics)
    if corruptions:
        metrics["robustness"] = write_robustness(
            classifier, source, corruptions, severities or [1, 2, 3, 4, 5], out, batch_size
        )
    return metrics


def write_robustness(
    classifier: Classifier, source: DataSource, names, severities, out: Path, batch_size: int
) -> dict:
    """``robustness.json`` and ``robustness.png``: accuracy per corruption and severity."""
    table, mean = robustness(
        classifier.predict_arrays, source, classifier.image_size, names, severities, batch_size
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
