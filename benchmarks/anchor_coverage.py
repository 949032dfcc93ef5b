"""Do the detector's anchors fit a dataset's boxes? Share matched at IoU >= 0.5, per class.

    python benchmarks/anchor_coverage.py [--data NEU-DET] [--image-size 160] \
        [--ratios "0.5,1,2;0.2,0.5,1,2,5"] [--anchor-sizes "4;auto"]

Reads the training split's true boxes (dataset root or TFRecords) at the model's input size and
prints, for each set of anchor aspect ratios and anchor size, the share of each class's boxes
whose best anchor overlaps them at IoU >= 0.5 (the label encoder's match rule); ``auto`` is the
size ``detect.anchor_size: auto`` chooses on these boxes. No training, no weights.
"""

from __future__ import annotations

import argparse

from _paths import add_data_arguments

from defectscope.core.tf_import import import_tensorflow_quietly
from defectscope.data.detection import box_table, records_for
from defectscope.data.discovery import BACKGROUND
from defectscope.data.pipeline import open_source
from defectscope.models.anchors import (
    AUTO_ANCHOR_SIZE,
    box_coverage,
    choose_anchor_size,
    create_anchor_generator,
)


def coverage_table(boxes, labels, classes, image_size, ratio_sets, sizes) -> dict:
    """``{column name: {class: share}}`` for every ratio set and anchor size."""
    table = {}
    for ratios in ratio_sets:
        for size in sizes:
            if size == AUTO_ANCHOR_SIZE:
                size, coverage = choose_anchor_size(boxes, labels, classes, image_size, 7, ratios)
            else:
                anchors = create_anchor_generator(7, float(size), ratios)
                coverage = box_coverage(anchors, image_size, boxes, labels, classes)
            table[f"{','.join(f'{r:g}' for r in ratios)} @{float(size):.3g}"] = coverage
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--ratios", default="0.5,1,2;0.2,0.5,1,2,5")
    parser.add_argument("--anchor-sizes", default="4;auto")
    add_data_arguments(parser, weights=False)
    args = parser.parse_args()
    import_tensorflow_quietly()
    source = open_source(records_for(args.data), args.split)
    classes = [name for name in source.classes if name != BACKGROUND]
    boxes, labels = box_table(source)
    boxes = boxes * args.image_size
    ratio_sets = [tuple(float(r) for r in part.split(",")) for part in args.ratios.split(";")]
    sizes = args.anchor_sizes.split(";")
    table = coverage_table(boxes, labels, classes, args.image_size, ratio_sets, sizes)
    counts = {name: int((labels == i).sum()) for i, name in enumerate(classes)}
    print(f"{args.split} boxes of {args.data} at {args.image_size} px, IoU >= 0.5 with an anchor")
    print(f"{'class':18s}{'boxes':>7s}" + "".join(f"{column:>20s}" for column in table))
    for name in classes:
        shares = "".join(f"{coverage.get(name, 0.0):20.0%}" for coverage in table.values())
        print(f"{name:18s}{counts[name]:7d}{shares}")


if __name__ == "__main__":
    main()
