"""Stretch or letterbox non-square images? Frozen-feature accuracy of both, one table.

    python benchmarks/resize_modes.py [--data NEU-DET] [--weights W] [--aspects 1,0.5,2]

NEU-DET and X-SDD are square, so non-square data is made from them: every image is cropped
(seeded position) to the aspect ratio width/height of each ``--aspects`` value, keeping its full
height or width, in train and validation alike (aspect 1 is the data as it is). For each aspect
and resize mode the frozen ImageNet Xception's pooled features feed a logistic-regression head
(scikit-learn, C=1) trained on train and scored on validation. A class-folder dataset is split
as `convert` splits it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _paths import add_data_arguments
from PIL import Image
from sklearn.linear_model import LogisticRegression

from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.data.discovery import discover_dataset
from defectscope.data.pipeline import open_source
from defectscope.models.xception import create_feature_extractor, create_model
from defectscope.training.features import extract_features

IMAGE_SIZE = 200


def cropped_copy(data: Path, aspect: float, out: Path, seed: int = 0) -> Path:
    """A Kaggle-layout copy of ``data`` with every image cropped to ``aspect``."""
    rng = np.random.default_rng(seed)
    index = discover_dataset(data)
    for split, samples in index.samples.items():
        for sample in samples:
            image = Image.open(sample.image_path).convert("RGB")
            width, height = image.size
            if aspect < width / height:
                new_w, new_h = max(1, round(height * aspect)), height
            else:
                new_w, new_h = width, max(1, round(width / aspect))
            left = int(rng.integers(0, width - new_w + 1))
            top = int(rng.integers(0, height - new_h + 1))
            target = out / split / "images" / sample.class_name / f"{sample.image_path.stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            image.crop((left, top, left + new_w, top + new_h)).save(target)
    return out


def accuracy(extractor, root: Path, resize: str) -> float:
    train, val = open_source(root, "train"), open_source(root, "validation")
    x_train, y_train = extract_features(extractor, train, IMAGE_SIZE, resize=resize)
    x_val, y_val = extract_features(extractor, val, IMAGE_SIZE, resize=resize)
    head = LogisticRegression(C=1.0, max_iter=5000).fit(x_train, y_train)
    return float((head.predict(x_val) == y_val).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--aspects", default="1,0.5,2")
    args = parser.parse_args()
    import_tensorflow_quietly()
    classes = discover_dataset(args.data).classes
    model = create_model(len(classes), IMAGE_SIZE, str(args.weights))
    extractor = create_feature_extractor(model)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for aspect in (float(a) for a in args.aspects.split(",")):
            root = (
                args.data
                if aspect == 1
                else cropped_copy(args.data, aspect, Path(scratch) / f"a{aspect}")
            )
            found = {mode: accuracy(extractor, root, mode) for mode in ("stretch", "letterbox")}
            rows.append((aspect, found))
            print(f"aspect {aspect}: {found}", flush=True)
    print(f"\ndata: {args.data}  input {IMAGE_SIZE} px  cores: {os.cpu_count()}")
    print(f"{'aspect w/h':>11}{'stretch':>10}{'letterbox':>11}")
    for aspect, found in rows:
        print(f"{aspect:>11.2f}{found['stretch']:>10.4f}{found['letterbox']:>11.4f}")


if __name__ == "__main__":
    main()
