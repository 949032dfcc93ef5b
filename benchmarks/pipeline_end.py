"""The wait at a tf.data iterator's end, with and without tf.data's autotuning thread.

    python benchmarks/pipeline_end.py [--passes 4] [--busy 1.8]

Each pass iterates a small pipeline (360 elements in 12 batches, a parallel map, prefetch) and
keeps both cores busy for ``--busy`` seconds between batches, as a model would; then the
iterator is deleted and the deletion timed. The default pipeline runs TensorFlow's autotuning
thread, which wakes at growing intervals (10 ms doubling to 60 s); defectscope's pipelines
switch it off (``defectscope.data.tfdata.without_autotune_thread``). A pass whose deletion
waits more than a second counts as stalled. Variants alternate, one process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf

from defectscope.data.tfdata import without_autotune_thread


def pipeline(thread: bool):
    """360 random 200x200 images in batches of 32, as a prediction pass reads them."""
    images = tf.data.Dataset.range(360).map(
        lambda i: tf.random.uniform([200, 200, 3]) * tf.cast(i, tf.float32),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    batches = images.batch(32).prefetch(2)
    return batches if thread else without_autotune_thread(batches)


def one_pass(thread: bool, busy_seconds: float, work: np.ndarray) -> tuple[float, float]:
    """(pass seconds, seconds the iterator's deletion waited)."""
    started = time.perf_counter()
    iterator = iter(pipeline(thread))
    for _ in iterator:
        until = time.perf_counter() + busy_seconds
        while time.perf_counter() < until:
            work @ work
    deleting = time.perf_counter()
    del iterator
    ended = time.perf_counter()
    return ended - started, ended - deleting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=4, help="passes per variant")
    parser.add_argument("--busy", type=float, default=1.8, help="busy seconds per batch")
    args = parser.parse_args()
    work = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
    found: dict[str, list[tuple[float, float]]] = {"autotuning thread": [], "without": []}
    for _ in range(args.passes):
        for name in found:
            found[name].append(one_pass(name != "without", args.busy, work))
            print(f"  {name}: pass {found[name][-1][0]:.1f} s", flush=True)
    print(f"\n{'pipeline':<20} {'passes':>6} {'stalled':>7} {'pass s':>12} {'wait s max':>10}")
    for name, rows in found.items():
        passes, waits = [r[0] for r in rows], [r[1] for r in rows]
        stalled = sum(wait > 1.0 for wait in waits)
        span = f"{min(passes):.1f}-{max(passes):.1f}"
        print(f"{name:<20} {len(rows):>6} {stalled:>7} {span:>12} {max(waits):>10.1f}")


if __name__ == "__main__":
    main()
