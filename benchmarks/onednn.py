"""Training steps with TensorFlow's oneDNN kernels off and on: images per second of each.

    python benchmarks/onednn.py [--seconds 40] [--rounds 2]

One process at a time, the settings alternated ``--rounds`` times (``TF_ENABLE_ONEDNN_OPTS`` is
read once, at TensorFlow's import, so every measurement is a fresh process). Workloads, on
random data with random weights (nothing to download):

- ``detector``: the ``detect`` preset's training step on cached encoder features at 160 px
  (the pyramid, both heads and KerasHub's loss, batch 16): what ``train --task detect`` runs.
- ``finetune``: Xception at 200 px with blocks 9-14 trainable (BatchNormalization frozen), as
  the default classifier recipe's phase 2, batch 32.

Also prints whether TensorFlow's own default turns oneDNN on for this CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CLASSES = ["a", "b", "c", "d", "e", "f"]


def _detector_step():
    import keras
    import numpy as np

    from defectscope.models.detector import create_detector, detector_settings
    from defectscope.training.config import resolve_config
    from defectscope.training.detect import head_trainer

    config = resolve_config("detect", data=".", out="unused", weights="none")
    detector = create_detector(CLASSES, 160, "none", **detector_settings(config.detect))
    trainer = head_trainer(detector)
    detector.compile()
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4, global_clipnorm=10.0))
    rng = np.random.default_rng(0)
    features = {
        tensor.name: rng.random((16, *tensor.shape[1:]), "float32") for tensor in trainer.inputs
    }
    corner = rng.uniform(0, 100, (16, 8, 2))
    size = rng.uniform(8, 60, (16, 8, 2))
    boxes = np.concatenate([corner, corner + size], axis=-1).astype("float32")
    truth = {"boxes": boxes, "labels": rng.integers(0, 6, (16, 8)).astype("float32")}
    return 16, lambda: trainer.train_on_batch(features, truth)


def _finetune_step():
    import keras
    import numpy as np

    base = keras.applications.Xception(
        include_top=False, weights=None, input_shape=(200, 200, 3), pooling="avg"
    )
    trainable = False
    for layer in base.layers:
        trainable = trainable or layer.name.startswith("block9")
        frozen_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable and not frozen_norm
    model = keras.Model(base.input, keras.layers.Dense(6)(base.output))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 200, 200, 3), "float32"), rng.integers(0, 6, 32)
    return 32, lambda: model.train_on_batch(x, y)


def measure(workload: str, seconds: float) -> tuple[float, bool]:
    """Images per second of ``workload`` in this process, and whether oneDNN is on."""
    from defectscope.core.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from tensorflow.python.util import _pywrap_util_port

    batch, step = _detector_step() if workload == "detector" else _finetune_step()
    step()
    step()  # traced and warmed up
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        images += batch
    return images / (time.perf_counter() - started), _pywrap_util_port.IsMklEnabled()


def _run(workload: str, seconds: float, onednn: str | None) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    command = [sys.executable, __file__, "--worker", workload, "--seconds", str(seconds)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{workload} worker failed:\n{done.stderr[-2000:]}")
    rate, enabled = done.stdout.split()[-2:]
    return float(rate), enabled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", choices=["detector", "finetune"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rate, enabled = measure(args.worker, args.seconds)
        print(f"{rate:.2f} {enabled}")
        return
    print(f"TensorFlow's default on this CPU: oneDNN {_run('finetune', 1.0, None)[1]}")
    print(f"{'workload':<10}{'round':>6}{'oneDNN off':>12}{'oneDNN on':>12}{'on / off':>10}")
    for workload in ("detector", "finetune"):
        for round_number in range(1, args.rounds + 1):
            off = _run(workload, args.seconds, "0")[0]
            on = _run(workload, args.seconds, "1")[0]
            print(f"{workload:<10}{round_number:>6}{off:>12.2f}{on:>12.2f}{on / off:>10.2f}")


if __name__ == "__main__":
    main()
