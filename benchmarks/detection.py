"""A detector run measured: mAP against training minutes, per-class AP beside published
YOLOv5s figures, and CPU speed of Keras and the exports at batch 1, in one table each.

    python benchmarks/detection.py --run runs/neu-det [--seconds 10] [--formats onnx,tflite]

The curve comes from the run's own files: ``results.csv`` (selection mAP after each epoch and
the epoch's seconds) and ``state.json`` (the time spent computing the cached encoder features,
counted before the first epoch). The per-class table is the run's final evaluation on its
validation split (chosen on the selection set). Speed: ``defectscope benchmark --tta``'s timing
of the whole detection (network and box decoding; ``+tta`` with test-time flips) on random
images, exporting the formats a detector supports when the run has none yet.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from defectscope.core.tf_import import import_tensorflow_quietly

# AP@0.5 per class of YOLOv5s on NEU-DET, as reported in the issue that asked for the detector
YOLOV5S_AP50 = {
    "crazing": 0.53,
    "inclusion": 0.79,
    "patches": 0.95,
    "pitted_surface": 0.85,
    "rolled-in_scale": 0.58,
    "scratches": 0.81,
}


PHASES = ("detect", "detect-finetune")  # the heads' epochs, then the whole detector's


def curve(run: Path) -> list[tuple[str, int, float, float, float]]:
    """``(phase, epoch, minutes since the start, selection mAP@0.5, mAP@0.5:0.95)`` per epoch
    of the heads and of the whole detector."""
    from defectscope.training.callbacks import read_results

    state = json.loads((run / "state.json").read_text())
    elapsed = float(state.get("feature_seconds") or 0.0)
    rows = []
    for row in read_results(run / "results.csv"):
        if row["phase"] not in PHASES:
            continue
        elapsed += float(row["seconds"])
        rows.append(
            (
                "heads" if row["phase"] == "detect" else "whole",
                int(row["epoch"]),
                elapsed / 60,
                float(row["selection_map50"]),
                float(row["selection_map50_95"]),
            )
        )
    return rows


def print_curve(run: Path) -> None:
    print(f"\n{run}: selection mAP after each epoch (minutes include the feature cache)")
    print(f"{'phase':>6}{'epoch':>6}{'minutes':>9}{'mAP@0.5':>10}{'mAP@.5:.95':>12}")
    for phase, epoch, minutes, map50, map50_95 in curve(run):
        print(f"{phase:>6}{epoch:>6}{minutes:>9.1f}{map50:>10.4f}{map50_95:>12.4f}")


def print_per_class(run: Path) -> None:
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    print(
        f"\nvalidation ({metrics['num_images']} images, chosen on {metrics.get('selected_on')}): "
        f"mAP@0.5 {metrics['map50']:.4f}, mAP@0.5:0.95 {metrics['map50_95']:.4f}"
    )
    print(f"{'class':<18}{'AP@0.5':>8}{'YOLOv5s':>9}")
    for name, ap in metrics["per_class_ap50"].items():
        reference = YOLOV5S_AP50.get(name)
        shown = f"{reference:.2f}" if reference is not None else "-"
        print(f"{name:<18}{ap:>8.4f}{shown:>9}")


def print_speed(run: Path, formats: tuple[str, ...], seconds: float) -> None:
    from defectscope.deploy.benchmark import format_table, run_benchmark

    print()
    print(format_table(run_benchmark(run, formats, (1,), seconds, tta=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--formats", default="onnx,tflite,onnx-int8,tflite-int8")
    args = parser.parse_args()
    print_curve(args.run)
    print_per_class(args.run)
    import_tensorflow_quietly()
    print_speed(args.run, tuple(f for f in args.formats.split(",") if f), args.seconds)


if __name__ == "__main__":
    main()
