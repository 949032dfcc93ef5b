"""How well does a trained model do on the augmented images phase 2 trains on? One table.

    python benchmarks/head_under_augmentation.py --model RUN/weights/best.keras [--data NEU-DET]

Scores the model (no update) on its dataset's training split: clean, and under each part of the
default augmentation on its own and all together (seeded). Run on a head-only model
(``--epochs 0``) it shows how far phase 2's images are from what phase 1 trained on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _paths import add_data_arguments

from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.data.augment import AugmentConfig
from defectscope.data.pipeline import create_dataset, open_source

NOTHING = {
    "flip": False,
    "rotate90": False,
    "brightness": 0.0,
    "contrast": 0.0,
    "noise_prob": 0.0,
    "blur_prob": 0.0,
}
DEFAULT = AugmentConfig()
VARIANTS = {
    "clean": None,
    "flips and rotations": AugmentConfig(**{**NOTHING, "flip": True, "rotate90": True}),
    "brightness and contrast": AugmentConfig(
        **{**NOTHING, "brightness": DEFAULT.brightness, "contrast": DEFAULT.contrast}
    ),
    "noise (always)": AugmentConfig(**{**NOTHING, "noise_prob": 1.0}),
    "blur (always)": AugmentConfig(**{**NOTHING, "blur_prob": 1.0}),
    "default augmentation": DEFAULT,
}


def accuracy(model, source, image_size: int, augment: AugmentConfig | None, seed: int) -> float:
    dataset = create_dataset(
        source,
        image_size=image_size,
        batch_size=32,
        training=augment is not None,
        augment=augment,
        seed=seed,
    )
    hits = count = 0
    for images, labels in dataset:
        predicted = model(images, training=False).numpy().argmax(axis=1)
        hits += int((predicted == labels.numpy()).sum())
        count += len(predicted)
    return hits / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a classifier .keras file")
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=7)
    add_data_arguments(parser, weights=False)
    args = parser.parse_args()
    import_tensorflow_quietly()
    import keras

    model = keras.models.load_model(args.model, compile=False)
    image_size = int(model.inputs[0].shape[1])
    source = open_source(args.data, args.split)
    print(f"{args.model} on {source.num_examples} {args.split} images of {args.data}")
    print(f"{'images':28s} {'accuracy':>9s} {'seconds':>8s}")
    for name, augment in VARIANTS.items():
        started = time.perf_counter()
        score = accuracy(model, source, image_size, augment, args.seed)
        print(f"{name:28s} {score:9.4f} {time.perf_counter() - started:8.0f}", flush=True)


if __name__ == "__main__":
    main()
