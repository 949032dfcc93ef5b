"""Do the detector's anchors fit a dataset's boxes? Share matched at IoU >= 0.5, per class.

    python benchmarks/anchor_coverage.py [--data NEU-DET] [--image-size 192] \
        [--ratios "0.5,1,2;0.25,0.5,1,2,4;0.2,0.5,1,2,5"]

Reads the training split's true boxes (dataset root or TFRecords) at the model's input size and
prints, for each set of anchor aspect ratios, the share of each class's boxes whose best anchor
overlaps them at IoU >= 0.5 (the label encoder's match rule). No training, no weights.
"""

from __future__ import annotations

import argparse

import numpy as np
from _paths import add_data_arguments

from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.data.detection import create_detection_dataset, records_for
from defectscope.data.pipeline import open_source
from defectscope.models.detector import anchor_coverage, create_detector


def true_boxes(data, split: str, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    source = open_source(records_for(data), split)
    boxes, labels = [], []
    for _, target, _ in create_detection_dataset(source, image_size, batch_size=64):
        boxes.append(target["boxes"].numpy())
        labels.append(target["labels"].numpy())
    return np.concatenate(boxes), np.concatenate(labels), list(source.classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--ratios", default="0.5,1,2;0.25,0.5,1,2,4;0.2,0.5,1,2,5")
    add_data_arguments(parser, weights=False)
    args = parser.parse_args()
    import_tensorflow_quietly()
    boxes, labels, classes = true_boxes(args.data, args.split, args.image_size)
    ratio_sets = [tuple(float(r) for r in part.split(",")) for part in args.ratios.split(";")]
    table = {}
    for ratios in ratio_sets:
        detector = create_detector(classes, args.image_size, None, aspect_ratios=ratios)
        table[ratios] = anchor_coverage(detector, boxes, labels, classes)
    counts = {name: int((labels == i).sum()) for i, name in enumerate(classes)}
    header = "".join(f"{','.join(f'{r:g}' for r in ratios):>18s}" for ratios in ratio_sets)
    print(f"{args.split} boxes of {args.data} at {args.image_size} px, IoU >= 0.5 with an anchor")
    print(f"{'class':18s}{'boxes':>7s}{header}")
    for name in table[ratio_sets[0]]:
        shares = "".join(f"{table[ratios][name]:18.0%}" for ratios in ratio_sets)
        print(f"{name:18s}{counts[name]:7d}{shares}")


if __name__ == "__main__":
    main()
