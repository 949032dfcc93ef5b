"""The pointing game: does the Grad-CAM peak fall inside a ground-truth box of the image?"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from defectscope.data.discovery import discover_dataset
from defectscope.data.pipeline import DataSource, create_dataset, is_tfrecord_folder
from defectscope.data.records import iter_records
from defectscope.data.tfdata import record_dataset
from defectscope.data.tfrecord_features import example_to_record
from defectscope.inference.classifier import Classifier
from defectscope.inference.explain import peak_location

Box = tuple[float, float, float, float]  # normalised xmin, ymin, xmax, ymax


def boxes_by_source_id(source: DataSource) -> dict[str, list[Box]]:
    """The VOC boxes of every image of a split, from its TFRecords or its XML files."""
    found: dict[str, list[Box]] = {}
    if is_tfrecord_folder(source.path):
        for serialized in record_dataset(source.files).as_numpy_iterator():
            record = example_to_record(serialized)
            found[record.source_id] = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes]
        return found
    index = discover_dataset(Path(source.path))
    samples = index.samples.get(source.split, [])
    for _, record, _ in iter_records(samples, index.label_map(), root=index.root):
        if record is not None:
            found[record.source_id] = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes]
    return found


def pointing_game(classifier: Classifier, source: DataSource, batch_size: int = 16) -> dict:
    """Hit rate of the heatmap peak (of the true class) in a box, overall and per class."""
    boxes = boxes_by_source_id(source)
    hits: dict[str, list[bool]] = defaultdict(list)
    dataset = create_dataset(
        source,
        image_size=classifier.image_size,
        batch_size=batch_size,
        with_ids=True,
        resize=classifier.resize,
    )
    for images, labels, ids in dataset:
        maps = classifier.explain(images, labels)
        for heatmap, label, source_id in zip(maps, labels.numpy(), ids.numpy(), strict=True):
            image_boxes = boxes.get(source_id.decode(), [])
            if not image_boxes:
                continue
            x, y = peak_location(heatmap)
            inside = any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in image_boxes)
            hits[source.classes[int(label)]].append(inside)
    every = [hit for values in hits.values() for hit in values]
    return {
        "pointing_game": float(np.mean(every)) if every else float("nan"),
        "num_images_with_boxes": len(every),
        "per_class": {
            name: {"pointing_game": float(np.mean(hits[name])), "images": len(hits[name])}
            for name in source.classes
            if hits[name]
        },
    }
