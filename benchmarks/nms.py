"""Box decoding at batch 1: KerasHub's non-max suppression against defectscope's per class.

    python benchmarks/nms.py --model runs/neu-det [--data NEU-DET] [--images 40] \
        [--thresholds 0.3,0.4,0.5,0.6]

A trained detector's raw outputs on the first validation images are computed once; each
decoder (anchors, box deltas, suppression: one compiled graph) then decodes them one image at a
time, and the table gives milliseconds per image and boxes kept per image, per IoU threshold.
KerasHub's ``NonMaxSuppression`` keeps one class per anchor and suppresses across classes; the
detector's own layer (TensorFlow's ``combined_non_max_suppression``) suppresses within each
class. Only the decoders differ: the network, the images and the outputs are the same.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _paths import add_data_arguments

from defectscope.core.tf_import import import_tensorflow_quietly


def validation_images(data, image_size: int, count: int) -> np.ndarray:
    from defectscope.data.detection import create_detection_dataset, records_for
    from defectscope.data.pipeline import open_source

    source = open_source(records_for(data), "validation")
    images = [batch.numpy() for batch, _, _ in create_detection_dataset(source, image_size, 16)]
    return np.concatenate(images)[:count]


def time_decoder(detector, raws: list[dict], images: np.ndarray) -> tuple[float, float]:
    """Milliseconds per image and boxes kept per image, after one warm-up call."""
    from defectscope.models.detector import compiled_decoder, per_image

    decode = compiled_decoder(detector)
    decode(raws[0], images[:1])
    kept, started = 0, time.perf_counter()
    for index, raw in enumerate(raws):
        found = per_image(decode(raw, images[index : index + 1]))
        kept += len(found[0][0])
    seconds = time.perf_counter() - started
    return 1000 * seconds / len(raws), kept / len(raws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a detector run folder or .keras file")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--thresholds", default="0.3,0.4,0.5,0.6")
    add_data_arguments(parser, weights=False)
    args = parser.parse_args()
    import_tensorflow_quietly()
    from keras_hub.src.layers.modeling.non_max_supression import NonMaxSuppression

    from defectscope.inference.detector import load_detector
    from defectscope.models.detector import set_nms_iou

    detector = load_detector(args.model).model
    images = validation_images(args.data, detector.backbone.image_encoder.image_size, args.images)
    raws = [
        {k: np.asarray(v) for k, v in detector(images[i : i + 1], training=False).items()}
        for i in range(len(images))
    ]
    own, settings = detector.prediction_decoder, detector.prediction_decoder.get_config()
    keras_hub_layer = NonMaxSuppression(
        bounding_box_format=settings["bounding_box_format"],
        from_logits=settings["from_logits"],
        iou_threshold=settings["iou_threshold"],
        confidence_threshold=settings["confidence_threshold"],
        max_detections=settings["max_detections"],
    )
    print(f"{len(raws)} validation images of {args.data}, batch 1, decoding only")
    print(f"{'IoU':>5}{'KerasHub ms':>13}{'boxes':>7}{'per class ms':>14}{'boxes':>7}{'ratio':>7}")
    for threshold in (float(t) for t in args.thresholds.split(",")):
        row = []
        for layer in (keras_hub_layer, own):
            detector.prediction_decoder = layer
            set_nms_iou(detector, threshold)
            row.extend(time_decoder(detector, raws, images))
        print(
            f"{threshold:>5.2f}{row[0]:>13.1f}{row[1]:>7.1f}{row[2]:>14.1f}{row[3]:>7.1f}"
            f"{row[0] / row[2]:>7.1f}"
        )
    detector.prediction_decoder = own


if __name__ == "__main__":
    main()
