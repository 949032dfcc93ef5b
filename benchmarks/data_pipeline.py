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

from defectscope.data.pipeline import create_dataset, open_source
from defectscope.data.tfrecord_writer import convert_dataset

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "NEU-DET"


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
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("DEFECTSCOPE_NEU_ROOT", DEFAULT_DATA))
    )
    parser.add_argument("--image-size", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest = convert_dataset(args.data, Path(tmp) / "tfrecords")
        convert_seconds = time.perf_counter() - started
        total = sum(s["num_records"] for s in manifest["splits"].values())
        rows.append(
            (
                "convert (all splits)",
                f"{total} images",
                f"{convert_seconds:.1f} s",
                f"{total / convert_seconds:.0f} img/s",
            )
        )
        for label, path in (
            ("pipeline from TFRecords", Path(tmp) / "tfrecords"),
            ("pipeline from folders", args.data),
        ):
            source = open_source(path, "train")
            dataset = create_dataset(source, image_size=args.image_size, batch_size=args.batch_size)
            rate = images_per_second(dataset, args.passes)
            rows.append(
                (
                    label,
                    f"{source.num_examples} images",
                    f"{args.passes} passes",
                    f"{rate:.0f} img/s",
                )
            )
    print(
        f"\ndata: {args.data}  image size {args.image_size}  batch {args.batch_size}  "
        f"cores {os.cpu_count()}"
    )
    print(f"{'step':<26}{'size':>14}{'run':>12}{'rate':>14}")
    for row in rows:
        print(f"{row[0]:<26}{row[1]:>14}{row[2]:>12}{row[3]:>14}")
    ratio = float(rows[1][3].split()[0]) / float(rows[2][3].split()[0])
    print(f"TFRecords / folders throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
