"""Two TensorFlow processes on one machine (as ``make test`` runs them): images per second of
each, with TensorFlow's default threads and with one thread per process.

    python benchmarks/process_threads.py --seconds 40

Workloads (random data, no weights needed): Xception training steps at 200 px (batch 16) and
four 3x3 convolutions of 256 channels plus one of 90 at 24x24 (a detector's heads on P3).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _training_step(workload: str):
    from defectscope.core.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    if workload == "xception":
        base = keras.applications.Xception(
            include_top=False, weights=None, input_shape=(200, 200, 3), pooling="avg"
        )
        model = keras.Model(base.input, keras.layers.Dense(6)(base.output))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x, y = rng.random((16, 200, 200, 3), "float32"), rng.integers(0, 6, 16)
    else:
        inputs = keras.Input((24, 24, 256))
        hidden = inputs
        for _ in range(4):
            hidden = keras.layers.Conv2D(256, 3, padding="same", activation="relu")(hidden)
        model = keras.Model(inputs, keras.layers.Conv2D(90, 3, padding="same")(hidden))
        model.compile("adam", "mse")
        x, y = rng.random((16, 24, 24, 256), "float32"), rng.random((16, 24, 24, 90), "float32")
    return lambda: model.train_on_batch(x, y)


def measure(workload: str, seconds: float) -> float:
    """Images per second of one process running ``workload`` for ``seconds``."""
    step = _training_step(workload)
    step()
    step()  # traced and warmed up
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        images += 16
    return images / (time.perf_counter() - started)


def _processes(workload: str, seconds: float, count: int, env: dict) -> list[float]:
    command = [sys.executable, __file__, "--worker", workload, "--seconds", str(seconds)]
    running = [
        subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    rates = []
    for process in running:
        printed = process.communicate()[0]
        if process.returncode != 0:
            raise SystemExit(f"{workload} worker failed with exit code {process.returncode}")
        rates.append(float(printed.split()[-1]))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--worker", choices=["xception", "heads"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(f"{measure(args.worker, args.seconds):.2f}")
        return
    print(f"{'workload':<10}{'setting':<26}{'images/s of each process':>26}")
    for workload in ("xception", "heads"):
        for setting, count, env in (
            ("one process, default", 1, {}),
            ("two processes, default", 2, {}),
            ("two processes, 1 thread", 2, ONE_THREAD),
        ):
            rates = _processes(workload, args.seconds, count, env)
            print(f"{workload:<10}{setting:<26}{' + '.join(f'{r:.2f}' for r in rates):>26}")


if __name__ == "__main__":
    main()
