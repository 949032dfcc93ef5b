"""Evaluation outputs: metrics.json, confusion_matrix.png, report.md, misclassified.{csv,png}."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from defectscope.core.atomic_io import atomic_path, atomic_write_json, atomic_write_text
from defectscope.core.spreadsheet import safe_cell
from defectscope.core.text import plural
from defectscope.evaluation.metrics import EvaluationResult, compute_metrics, misclassified_rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    """Counts and row-normalised recall side by side."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 2.2 + 0.75 * len(classes)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, title, fmt in (
        (axes[0], matrix, "counts", "d"),
        (axes[1], normalised, "normalised by true class", ".2f"),
    ):
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(values):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=colour, fontsize=9)
        ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    figure.tight_layout()
    _save(figure, path)
    return path


def plot_misclassified(result: EvaluationResult, rows: list[dict], path: Path) -> Path:
    """A grid of the wrong images, the most confident first, titled true -> predicted
    (confidence), under a heading that says how many of the mistakes it shows."""
    plt = _pyplot()
    shown = sorted(
        (r for r in rows if r["source_id"] in result.mistake_images),
        key=lambda row: -row["confidence"],
    )
    columns = min(6, max(1, len(shown)))
    lines = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(lines, columns, figsize=(2.6 * columns, 2.9 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, shown, strict=False):
        ax.imshow(result.mistake_images[row["source_id"]])
        ax.set_title(
            f"{Path(row['source_id']).name}\ntrue {row['true']}\n"
            f"pred {row['predicted']} ({row['confidence']:.2f})",
            fontsize=8,
        )
    if not shown:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    elif len(shown) < len(rows):
        heading = f"showing the {len(shown)} most confident of {len(rows)} mistakes"
        figure.suptitle(heading, fontsize=11)
    else:
        figure.suptitle(f"all {plural(len(rows), 'mistake')}", fontsize=11)
    figure.tight_layout()
    _save(figure, path)
    return path


def _decision_lines(metrics: dict) -> list[str]:
    lines = []
    view = metrics.get("defect_vs_ok")
    if view:
        lines.append(
            f"- defect vs OK (`{view['ok_class']}`, threshold {view['threshold']:.4f} chosen on "
            f"{view['chosen_on']} for at most {view['max_escape_rate']:.1%} escapes): escapes "
            f"{view['escapes']}/{view['defects']} ({view['escape_rate']:.2%}), false rejects "
            f"{view['false_rejects']}/{view['oks']} ({view['false_reject_rate']:.2%})"
        )
    unknown = metrics.get("unknown")
    if unknown:
        lines.append(
            f'- answered "unknown": {unknown["flagged"]} ({unknown["flagged_rate"]:.1%}) '
            f"at threshold {unknown['threshold']:.4f}"
        )
    return lines


def _provenance(metrics: dict) -> list[str]:
    """Which images chose the model and which measured it, when a training run says so."""
    if "measured_on" not in metrics:
        return []
    lines = [f"- measured on: {metrics['measured_on']}; chosen on: {metrics['selected_on']}"]
    if metrics.get("selection_is_validation"):
        lines.append("- the model was chosen on the reported split: this figure is selected")
    if metrics.get("head_validation_accuracy") is not None:
        lines.append(f"- phase 1 alone (head): {metrics['head_validation_accuracy']:.2%}")
    return lines


def markdown_report(metrics: dict, title: str) -> str:
    correct = metrics["num_images"] - metrics["num_errors"]
    lines = [
        f"# {title}",
        "",
        f"- accuracy: **{metrics['accuracy']:.2%}** ({correct}/{metrics['num_images']}, "
        f"{plural(metrics['num_errors'], 'error')})",
        f"- balanced accuracy (mean recall of the classes): **{metrics['balanced_accuracy']:.2%}**",
        f"- macro F1: **{metrics['macro_f1']:.4f}**",
        *_provenance(metrics),
        *_decision_lines(metrics),
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, values in metrics["per_class"].items():
        lines.append(
            f"| {name} | {values['precision']:.4f} | {values['recall']:.4f} | "
            f"{values['f1']:.4f} | {values['support']} |"
        )
    classes = metrics["classes"]
    lines += ["", "Confusion matrix (rows = true, columns = predicted):", ""]
    lines.append("| true \\ predicted | " + " | ".join(classes) + " |")
    lines.append("| --- |" + " ---: |" * len(classes))
    for name, row in zip(classes, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
    if metrics["num_errors"]:
        lines += ["Misclassified images: `misclassified.csv`, `misclassified.png`.", ""]
    return "\n".join(lines)


EVALUATION_FILES = frozenset(
    {
        "metrics.json",
        "confusion_matrix.png",
        "report.md",
        "misclassified.csv",
        "misclassified.png",
        "robustness.json",
        "robustness.png",
        "defect_curves.png",
    }
)


def is_evaluation_file(path: Path) -> bool:
    """A file an evaluation writes (or the temporary of one)."""
    return path.name in EVALUATION_FILES or (path.name.startswith(".") and ".tmp-" in path.name)


def write_evaluation(
    result: EvaluationResult,
    out_dir: str | Path,
    title: str = "Evaluation",
    context: dict | None = None,
) -> dict:
    """Write every evaluation file into ``out_dir`` (atomically) and return the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {**compute_metrics(result), **(context or {})}
    rows = misclassified_rows(result)
    atomic_write_json(out / "metrics.json", metrics)
    plot_confusion_matrix(
        np.array(metrics["confusion_matrix"]), result.classes, out / "confusion_matrix.png"
    )
    buffer = io.StringIO()
    columns = ["source_id", "true", "predicted", "confidence", "true_probability"]
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows({key: safe_cell(value) for key, value in row.items()} for row in rows)
    atomic_write_text(out / "misclassified.csv", buffer.getvalue())
    plot_misclassified(result, rows, out / "misclassified.png")
    atomic_write_text(out / "report.md", markdown_report(metrics, title))
    return metrics


_LOSS = ("loss", "selection_loss")
_ACCURACY = ("accuracy", "selection_accuracy")


def plot_training_curves(results: list[dict[str, str]], path: str | Path) -> Path:
    """Loss and accuracy (a detector: selection mAP) per epoch, one row per phase."""
    plt = _pyplot()
    phases = list(dict.fromkeys(r["phase"] for r in results)) or ["none"]
    figure, axes = plt.subplots(len(phases), 2, figsize=(11, 3.6 * len(phases)), squeeze=False)
    for (loss_ax, acc_ax), phase in zip(axes, phases, strict=True):
        rows = [r for r in results if r["phase"] == phase]
        x = [int(r["epoch"]) for r in rows]
        detection = any(r.get("selection_map50") for r in rows)
        quality = ("selection_map50", "selection_map50_95") if detection else _ACCURACY
        name = "mAP" if detection else "accuracy"
        for ax, key, columns in ((loss_ax, "loss", _LOSS), (acc_ax, name, quality)):
            for column, style in zip(columns, ("-", "--"), strict=True):
                values = [float(r[column]) if r.get(column) else np.nan for r in rows]
                ax.plot(x, values, style, marker="." if len(x) < 30 else None, label=column)
            ax.set_xlabel(f"{phase} epoch")
            ax.set_title(f"{phase}: {key}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, Path(path))
    return Path(path)


def plot_defect_curves(shapes: dict, threshold: float, path: str | Path) -> Path:
    """ROC and precision-recall curves of the defect score, side by side."""
    plt = _pyplot()
    figure, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    roc, pr = shapes["roc"], shapes["pr"]
    roc_ax.plot(roc["fpr"], roc["tpr"])
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set_xlabel("false-reject rate (OK called defect)")
    roc_ax.set_ylabel("defects caught (1 - escape rate)")
    roc_ax.set_title(f"ROC, area {roc['auc']:.4f}")
    pr_ax.plot(pr["recall"], pr["precision"])
    pr_ax.set_xlabel("recall of defects")
    pr_ax.set_ylabel("precision of defect calls")
    pr_ax.set_title(f"precision-recall, average precision {pr['average_precision']:.4f}")
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
    figure.suptitle(f"defect vs OK (operating threshold {threshold:.4f})", fontsize=10)
    figure.tight_layout()
    _save(figure, Path(path))
    return Path(path)


def plot_robustness(table: dict[str, dict[str, float]], mean: float, path: str | Path) -> Path:
    """Accuracy against severity, one line per corruption."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in table.items():
        levels = sorted(row, key=int)
        ax.plot([int(s) for s in levels], [row[s] for s in levels], marker="o", label=name)
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy under corruptions (mean {mean:.4f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, Path(path))
    return Path(path)
