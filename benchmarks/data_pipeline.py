"""Measure `convert` wall time on a dataset and input-pipeline throughput (TFRecords vs folders).

    python benchmarks/data_pipeline.py [--data ../shared/data/NEU-DET] [--image-size 200]

Prints one table; both pipelines are measured in the same run, so their ratio is meaningful
on a noisy machine. Throughput is decoded, resized and batched images per second over the
training split, after one warm-up pass.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _paths import add_data_arguments

from defectscope.data.pipeline import create_dataset, open_source
from defectscope.data.tfrecord_writer import convert_dataset


def images_per_second(dataset, passes: int) -> float:
    for _ in dataset:  # warm-up: file cache, tf.data autotuning
        pass
    started, count = time.perf_counter(), 0
    for _ in range(passes):
        for images, _labels in dataset:
            count += int(images.shape[0])
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser, weights=False)
    parser.add_argument("--image-size", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    rows = []  # (step, images, run, images per second)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest = convert_dataset(args.data, Path(tmp) / "tfrecords")
        seconds = time.perf_counter() - started
        total = sum(s["num_records"] for s in manifest["splits"].values())
        rows.append(("convert (all splits)", total, f"{seconds:.1f} s", total / seconds))
        for label, path in (
            ("from TFRecords", Path(tmp) / "tfrecords"),
            ("from folders", args.data),
        ):
            source = open_source(path, "train")
            dataset = create_dataset(source, image_size=args.image_size, batch_size=args.batch_size)
            rate = images_per_second(dataset, args.passes)
            rows.append((f"pipeline {label}", source.num_examples, f"{args.passes} passes", rate))
    print(
        f"\ndata: {args.data}  image size {args.image_size}  batch {args.batch_size}  "
        f"cores {os.cpu_count()}"
    )
    print(f"{'step':<26}{'images':>8}{'run':>12}{'img/s':>10}")
    for step, images, run, rate in rows:
        print(f"{step:<26}{images:>8}{run:>12}{rate:>10.0f}")
    ratio = rows[1][3] / rows[2][3]
    print(f"TFRecords / folders throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
