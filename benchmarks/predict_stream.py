"""Streaming `predict` over many small files: images/s and peak memory as the count grows.

    python benchmarks/predict_stream.py [--counts 10000,100000] [--work DIR]

Generates the files (small grey JPEGs, 1,000 per folder, not committed), a tiny 32 px
classifier saved as a .keras model with its metadata.json (the pipeline is what is measured,
not Xception), then runs the library's prediction job (what `defectscope predict FOLDER --out
preds.parquet --quiet` runs) once per count, and once from a --paths-from list for the largest
count, each in a fresh process, polling its peak resident memory (VmHWM). Memory is flat when
the largest count's peak is about the smallest's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from defectscope.data.neu import NEU_CLASSES
from defectscope.inference.batch import predict_files
from defectscope.inference.classifier import load_model
from defectscope.inference.model_files import write_model_metadata


def make_files(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` 48x48 JPEGs under ``root/NNNN/``; reused when already there."""
    marker = root / f".complete-{count}"
    if marker.is_file():
        return root
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (48, 48), dtype=np.uint8)
    for index in range(count):
        folder = root / f"{index // 1000:04d}"
        if index % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        pixels = np.roll(base, index % 48, axis=index % 2)
        Image.fromarray(pixels).save(folder / f"img_{index:07d}.jpg", quality=85)
    marker.touch()
    return root


def make_model(folder: Path) -> Path:
    import keras

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(NEU_CLASSES), activation="softmax"),
        ]
    )
    model.save(folder / "model.keras")
    write_model_metadata(folder, list(NEU_CLASSES), 32)
    return folder / "model.keras"


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def predict_job(model: str, sources: list[str], lists: list[str], out: str) -> None:
    """The library's batch prediction job, as ``defectscope predict --quiet`` runs it."""
    predict_files(load_model(model), sources, lists, out=out, batch_size=64)


def run_predict(model: Path, sources: list[str], lists: list[str], out: Path):
    """Seconds and peak RSS (MB) of one prediction job in a fresh (spawned) process."""
    process = multiprocessing.get_context("spawn").Process(
        target=predict_job, args=(str(model), sources, lists, str(out))
    )
    started = time.perf_counter()
    process.start()
    peak = 0.0
    while process.is_alive():
        peak = max(peak, peak_rss_mb(process.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if process.exitcode != 0:
        raise RuntimeError(f"prediction job failed with exit code {process.exitcode}")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10000,100000")
    parser.add_argument("--work", type=Path, default=None, help="keep files here (else a temp)")
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.counts.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        model = make_model(work / "model")
        rows = []
        for count in counts:
            started = time.perf_counter()
            root = make_files(work / f"files-{count}", count)
            made = time.perf_counter() - started
            seconds, peak = run_predict(model, [str(root)], [], work / f"preds-{count}.parquet")
            rows.append((count, "folder walk", seconds, peak, made))
        largest = counts[-1]
        listing = work / f"paths-{largest}.txt"
        with open(listing, "w") as handle:
            for folder in sorted((work / f"files-{largest}").iterdir()):
                if folder.is_dir():
                    handle.writelines(f"{p}\n" for p in sorted(folder.iterdir()))
        seconds, peak = run_predict(
            model, [], [str(listing)], work / f"preds-list-{largest}.parquet"
        )
        rows.append((largest, "--paths-from", seconds, peak, 0.0))
        import pyarrow.parquet as pq

        scored = pq.read_metadata(work / f"preds-{largest}.parquet").num_rows
    print(f"\ncores: {os.cpu_count()}; tiny 32 px model; batch 64; output Parquet")
    print(f"{'files':>9} {'input':<14} {'seconds':>8} {'img/s':>8} {'peak RSS MB':>12}")
    for count, source, seconds, peak, _ in rows:
        print(f"{count:>9,} {source:<14} {seconds:>8.1f} {count / seconds:>8.0f} {peak:>12.0f}")
    print(f"rows in the {largest:,} file result: {scored:,}")
    print(f"peak memory ratio {largest:,} / {counts[0]:,} files: {rows[-2][3] / rows[0][3]:.3f}")


if __name__ == "__main__":
    main()
