"""``evaluate``: a model on one split of a dataset, with every report file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defectscope.core.atomic_io import atomic_write_json
from defectscope.core.errors import ConfigError
from defectscope.core.files import prepare_output_folder
from defectscope.data.pipeline import DataSource, check_source, open_source
from defectscope.evaluation.corruptions import SEVERITIES, robustness
from defectscope.evaluation.localization import pointing_game
from defectscope.evaluation.metrics import predict_source
from defectscope.evaluation.operating_point import curves, defect_scores, rates
from defectscope.evaluation.report import (
    is_evaluation_file,
    plot_defect_curves,
    plot_robustness,
    write_evaluation,
)
from defectscope.inference.classifier import Classifier, load_model
from defectscope.inference.model_files import locate_model, read_metadata


class ClassMismatchError(ConfigError):
    """The data's classes are not the model's."""


def check_inputs(model, data, split: str, out, overwrite: bool = False) -> None:
    """What ``evaluate`` needs, checked without TensorFlow: the model's files and metadata, the
    data's split and classes, and an output folder that keeps the user's files."""
    if not isinstance(model, Classifier):
        check_data_classes(model, data, split)
    prepare_output_folder(out, "evaluation files", is_evaluation_file, overwrite)


def check_data_classes(model, data, split: str, ignored: frozenset[str] = frozenset()) -> None:
    """The classes of ``data``'s split (without ``ignored`` ones) are the model's, in order;
    read from the model's metadata and the data's manifest or folders, without TensorFlow."""
    classes = list(read_metadata(locate_model(model))["classes"])
    if isinstance(data, DataSource):
        return
    found = [name for name in check_source(data, [split]) if name not in ignored]
    if found != classes:
        raise ClassMismatchError(f"data classes {found} differ from the model's {classes}")


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
    context: dict | None = None,
) -> dict:
    """Evaluate a run folder, ``.keras`` file, export or loaded classifier; returns the metrics.

    ``data`` is a dataset root, a TFRecord folder or an opened :class:`DataSource` (whose own
    split is used). ``out`` may hold earlier evaluation files; other files are refused unless
    ``overwrite``. ``context`` (e.g. which split chose the model) goes into metrics.json.
    """
    check_inputs(model, data, split, out, overwrite)
    out = Path(out)
    classifier = model if isinstance(model, Classifier) else load_model(model)
    source = data if isinstance(data, DataSource) else open_source(data, split)
    if list(source.classes) != classifier.classes:
        raise ClassMismatchError(
            f"data classes {list(source.classes)} differ from the model's {classifier.classes}"
        )
    result = predict_source(classifier, source, batch_size)
    title = title or f"{classifier.path} on {source.path} ({source.split})"
    decisions = _decisions(classifier, result, out)
    metrics = write_evaluation(result, out, title, {**(context or {}), **decisions})
    if localization:
        metrics["localization"] = pointing_game(classifier, source)
        atomic_write_json(out / "metrics.json", metrics)
    if corruptions:
        metrics["robustness"] = write_robustness(
            classifier, source, corruptions, severities or [1, 2, 3, 4, 5], out, batch_size
        )
    return metrics


def _decisions(classifier: Classifier, result, out: Path) -> dict:
    """The model's operating point (defect or OK) and "unknown" share on these images, with
    the ROC and precision-recall curves of the defect score."""
    found: dict = {}
    metadata = classifier.metadata
    point = metadata.get("operating_point")
    if point and point["ok_class"] in result.classes:
        ok_index = result.classes.index(point["ok_class"])
        scores = defect_scores(result.probabilities, ok_index)
        is_defect = result.labels != ok_index
        found["defect_vs_ok"] = {
            "ok_class": point["ok_class"],
            "chosen_on": point["chosen_on"],
            "max_escape_rate": point["max_escape_rate"],
            **rates(scores, is_defect, point["threshold"]),
        }
        if is_defect.any() and not is_defect.all():
            shapes = curves(scores, is_defect)
            found["defect_vs_ok"]["roc_auc"] = shapes["roc"]["auc"]
            found["defect_vs_ok"]["average_precision"] = shapes["pr"]["average_precision"]
            plot_defect_curves(shapes, point["threshold"], out / "defect_curves.png")
    unknown = metadata.get("unknown")
    if unknown:
        scores = classifier.unknown_scores(result.probabilities, result.logits)
        flagged = int(np.sum(scores > unknown["threshold"]))
        found["unknown"] = {
            "threshold": unknown["threshold"],
            "flagged": flagged,
            "flagged_rate": flagged / max(len(result.labels), 1),
            "score": unknown["score"],
            "chosen_on": unknown["chosen_on"],
        }
    return found


def write_robustness(
    classifier: Classifier, source: DataSource, names, severities, out: Path, batch_size: int
) -> dict:
    """``robustness.json`` and ``robustness.png``: accuracy per corruption and severity."""
    table, mean = robustness(classifier, source, names, severities, batch_size)
    report = {
        "corruptions": table,
        "mean_corruption_accuracy": mean,
        "severities": list(severities),
        "parameters": {name: list(SEVERITIES[name]) for name in names},
    }
    atomic_write_json(out / "robustness.json", report)
    plot_robustness(table, mean, out / "robustness.png")
    return report
