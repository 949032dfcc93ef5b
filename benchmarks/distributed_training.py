"""Real-data training with 1 worker against 2 workers (MultiWorkerMirroredStrategy, localhost).

    python benchmarks/distributed_training.py [--data NEU-DET] [--weights W] [--epochs 2]

Converts the data to TFRecords if needed, then trains the default recipe (shorter
fine-tuning: --epochs) once as one process and once as two worker processes on this machine,
in the same runs folder, so phase 1 of the second run reads the features the first cached.
Prints wall time, fine-tuning seconds per epoch and validation accuracy for each, and the
ratio. Both workers share this machine's cores, so this measures the overhead of the
distribution, not a speed-up: on a cluster each worker has its own machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cluster import local_tf_configs
from _paths import add_data_arguments

from defectscope.data.pipeline import is_tfrecord_folder


def _train_args(data: Path, run: Path, weights: Path, epochs: int, *extra: str) -> list[str]:
    args = ["train", "--data", str(data), "--out", str(run), "--weights", str(weights)]
    return [sys.executable, "-m", "defectscope", *args, "--epochs", str(epochs), *extra]


def _summary(run: Path, seconds: float) -> dict:
    rows = list(csv.DictReader((run / "results.csv").read_text().splitlines()))
    epochs = [float(r["seconds"]) for r in rows if r["phase"] == "finetune"]
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    return {
        "minutes": seconds / 60,
        "epoch_seconds": sum(epochs) / len(epochs),
        "accuracy": metrics["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument("--runs", type=Path, default=None, help="keep runs here (else a temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or Path(scratch)
        data = args.data
        if not is_tfrecord_folder(data):
            data = runs / "tfrecords"
            if not is_tfrecord_folder(data):
                convert = [sys.executable, "-m", "defectscope", "convert", "--data", str(args.data)]
                subprocess.run([*convert, "--out", str(data)], check=True)
        results = {}
        started = time.perf_counter()
        single = runs / "one-worker"
        subprocess.run(_train_args(data, single, args.weights, args.epochs), check=True)
        results["1 worker"] = _summary(single, time.perf_counter() - started)

        started = time.perf_counter()
        pair = runs / "two-workers"
        command = _train_args(data, pair, args.weights, args.epochs, "--strategy", "multiworker")
        workers = [
            subprocess.Popen(command, env={**os.environ, "TF_CONFIG": tf_config})
            for tf_config in local_tf_configs(2)
        ]
        if any(worker.wait() != 0 for worker in workers):
            raise SystemExit("a worker failed")
        results["2 workers"] = _summary(pair, time.perf_counter() - started)

    print(f"\ncores: {os.cpu_count()}; default recipe, {args.epochs} fine-tuning epochs")
    print(f"{'setup':<10} {'wall min':>9} {'s/epoch':>9} {'val acc':>8}")
    for name, row in results.items():
        print(
            f"{name:<10} {row['minutes']:>9.1f} {row['epoch_seconds']:>9.0f}"
            f" {row['accuracy']:>8.2%}"
        )
    one, two = results["1 worker"], results["2 workers"]
    ratio = two["epoch_seconds"] / one["epoch_seconds"]
    print(f"2 workers / 1 worker, seconds per epoch: {ratio:.2f}")


if __name__ == "__main__":
    main()
