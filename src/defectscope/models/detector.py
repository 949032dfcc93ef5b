"""A RetinaNet defect detector from KerasHub on an ImageNet Xception with P3-P5 outputs.

KerasHub's ``RetinaNetObjectDetector`` brings the anchor generator, the label encoder, the focal
and box losses and the decoder layer (whose suppression, per class, is TensorFlow's combined
non-max suppression: :func:`_per_class_nms_class`); defectscope supplies the image encoder:
:class:`XceptionPyramid`, Keras' Xception with pixel scaling inside and the pyramid outputs P3
(``block4_sepconv2_bn``, stride 8), P4 (``block13_sepconv2_bn``, 16) and P5
(``block14_sepconv2_act``, 32). Images go in as float32 RGB in [0, 255]; boxes are pixel
``xyxy`` corners of the model's square input.
"""

from __future__ import annotations

import functools

from defectscope.core.errors import ConfigError
from defectscope.models.anchors import BOX_FORMAT, create_anchor_generator
from defectscope.models.box_loss import register_box_losses
from defectscope.models.xception import resolve_weights

PYRAMID_LAYERS = {
    "P3": "block4_sepconv2_bn",
    "P4": "block13_sepconv2_bn",
    "P5": "block14_sepconv2_act",
}
ENCODER_NAME = "xception_pyramid"


@functools.cache
def _pyramid_class():
    """The registered :class:`XceptionPyramid` (defined on first use: it imports KerasHub)."""
    import keras
    import keras_hub

    @keras.saving.register_keras_serializable(package="defectscope")
    class XceptionPyramid(keras_hub.models.FeaturePyramidBackbone):
        """Xception (no top) as a feature-pyramid image encoder with its own pixel scaling."""

        def __init__(self, image_size: int = 256, encoder_weights=None, **kwargs):
            inputs = keras.Input((image_size, image_size, 3), name="images")
            scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="pixel_scaling")(inputs)
            xception = keras.applications.Xception(
                include_top=False, weights=encoder_weights, input_tensor=scaled
            )
            pyramid = {
                level: xception.get_layer(name).output for level, name in PYRAMID_LAYERS.items()
            }
            super().__init__(inputs=inputs, outputs=pyramid["P5"], **kwargs)
            self.pyramid_outputs = pyramid
            self.image_size = image_size

        def get_config(self):
            return {"image_size": self.image_size, "name": self.name, "trainable": self.trainable}

    return XceptionPyramid


DEFAULT_NMS_IOU = 0.5
# boxes kept per image (COCO's evaluation counts 100; training raises it for denser data)
DEFAULT_MAX_DETECTIONS = 100
# the least confidence of a box shown to users when training chose none (Ultralytics' default)
DEFAULT_BOX_CONFIDENCE = 0.25


@functools.cache
def _per_class_nms_class():
    """The registered :class:`PerClassNonMaxSuppression` (defined on first use)."""
    import keras
    import tensorflow as tf
    from keras_hub.src.layers.modeling.non_max_supression import (
        NonMaxSuppression,
        mask_invalid_detections,
    )

    @keras.saving.register_keras_serializable(package="defectscope")
    class PerClassNonMaxSuppression(NonMaxSuppression):
        """KerasHub's decoder layer, suppressing within each class with TensorFlow's
        ``combined_non_max_suppression`` (as RetinaNet is evaluated): an anchor gives a box for
        every class above the threshold. KerasHub's own suppression keeps one class per anchor
        across classes, and its loop grows with the boxes it drops (measured per image at
        batch 1: 16 ms at IoU 0.5, 370 ms at 0.3, against 3 ms here at either)."""

        def call(self, box_prediction, class_prediction, images=None):
            if "rel" in self.bounding_box_format:
                raise ValueError(f"pixel boxes expected, got {self.bounding_box_format!r}")
            scores = tf.sigmoid(class_prediction) if self.from_logits else class_prediction
            boxes, confidence, labels, count = tf.image.combined_non_max_suppression(
                box_prediction[:, :, None, :],  # one box per anchor for every class
                scores,
                max_output_size_per_class=self.max_detections,
                max_total_size=self.max_detections,
                iou_threshold=self.iou_threshold,
                score_threshold=self.confidence_threshold,
                clip_boxes=False,  # pixels: IoU needs no particular corner order
            )
            found = {
                "boxes": boxes,
                "confidence": confidence,
                "labels": tf.cast(labels, "int32"),
                "num_detections": count,
            }
            return mask_invalid_detections(found)

    return PerClassNonMaxSuppression


# P3 is block 4's output and P4 block 13's: a tail from blocks 5-13 holds P4 and P5
FIRST_TUNABLE_BLOCK, LAST_TUNABLE_BLOCK = 5, 13


def split_encoder(encoder, tune_from_block: int = 0):
    """The encoder cut where training starts: ``(cached, tail)``.

    ``cached`` names the tensors computed once per image (``P3`` and, when blocks are tuned,
    ``C{block}``, the input of the first tuned block); ``tail`` is the model from that input
    to ``P4`` and ``P5``, sharing the encoder's layers, or None when the encoder stays frozen
    (``tune_from_block`` 0).
    """
    import keras

    if tune_from_block == 0:
        return dict(encoder.pyramid_outputs), None
    if not FIRST_TUNABLE_BLOCK <= tune_from_block <= LAST_TUNABLE_BLOCK:
        raise ConfigError(
            f"tune_from_block must be 0 (frozen encoder) or {FIRST_TUNABLE_BLOCK}-"
            f"{LAST_TUNABLE_BLOCK}, got {tune_from_block!r}"
        )
    start = encoder.get_layer(f"block{tune_from_block}_sepconv1_act").input
    pyramid = encoder.pyramid_outputs
    tail = keras.Model(start, {"P4": pyramid["P4"], "P5": pyramid["P5"]}, name="encoder_tail")
    return {"P3": pyramid["P3"], f"C{tune_from_block}": start}, tail


def register_detector_layers() -> None:
    """Make the detector's classes known to Keras (KerasHub's and :class:`XceptionPyramid`),
    so that a saved detector loads in safe mode."""
    import keras_hub  # noqa: F401  (registers RetinaNet and its layers)

    _pyramid_class()
    _per_class_nms_class()
    register_box_losses()


def create_encoder(image_size: int, weights=None):
    """The Xception pyramid encoder (ImageNet ``weights`` as for the classifier)."""
    if image_size < 96 or image_size % 32:
        raise ConfigError(
            f"detector image_size must be a multiple of 32, >= 96; got {image_size!r}"
        )
    return _pyramid_class()(image_size, resolve_weights(weights), name=ENCODER_NAME)


def create_detector(
    classes: list[str],
    image_size: int = 256,
    weights=None,
    max_level: int = 7,
    anchor_size: float = 4.0,
    confidence: float = 0.05,
    head_convs: int = 4,
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    nms_iou: float = DEFAULT_NMS_IOU,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
):
    """RetinaNet with KerasHub's anchors, label encoder, losses and decoder layer.

    ``aspect_ratios`` (height / width of the anchors) defaults to KerasHub's; the ``detect``
    training config asks for wider ones, which long thin defects need. ``nms_iou``: a box
    overlapping a more confident one of its class by more than this is dropped;
    ``max_detections``: the most boxes kept per image.

    The encoder's BatchNormalization stays frozen (inference mode) whatever is trained.
    """
    import keras
    import keras_hub

    if len(classes) < 1:
        raise ConfigError("a detector needs at least one class")
    encoder = create_encoder(image_size, weights)
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder,
        min_level=3,
        max_level=max_level,
        use_p5=False,
        image_shape=(image_size, image_size, 3),
    )
    anchors, label_encoder, decoder = _box_coding(
        max_level, anchor_size, aspect_ratios, confidence, nms_iou, max_detections
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone,
        num_classes=len(classes),
        bounding_box_format=BOX_FORMAT,
        anchor_generator=anchors,
        label_encoder=label_encoder,
        prediction_decoder=decoder,
        pre_logits_num_conv_layers=head_convs,
        name="defectscope_retinanet",
    )
    _initial_head_biases(detector)
    return detector


def _box_coding(
    max_level: int,
    anchor_size,
    aspect_ratios,
    confidence: float,
    nms_iou: float,
    max_detections: int,
):
    """KerasHub's anchor generator and label encoder, and the per-class decoder layer."""
    from keras_hub.src.models.retinanet.retinanet_label_encoder import RetinaNetLabelEncoder

    anchors = create_anchor_generator(max_level, anchor_size, aspect_ratios)
    # every true box gets its best anchor even below IoU 0.5: without it, 21 of 24 NEU
    # selection images of long, thin scratches had no positive anchor at all (AP@0.5 0.001)
    label_encoder = RetinaNetLabelEncoder(
        anchors,
        bounding_box_format=BOX_FORMAT,
        encoding_format="center_xywh",
        box_matcher_force_match_for_each_col=True,
    )
    decoder = _per_class_nms_class()(
        bounding_box_format=BOX_FORMAT,
        from_logits=True,
        iou_threshold=nms_iou,
        confidence_threshold=confidence,
        max_detections=int(max_detections),
    )
    return anchors, label_encoder, decoder


PRIOR_PROBABILITY = 0.01  # RetinaNet's initial foreground probability of every anchor


def _initial_head_biases(detector) -> None:
    """RetinaNet's initialisation: class logits start at the prior ``log(p / (1 - p))`` and
    box deltas at zero. KerasHub 0.32 builds it the other way round (the prior bias, -4.6, on
    the box head): every box starts e^-4.6 times its anchor, and with a frozen encoder the
    box head was still unlearning that after 5 epochs on NEU-DET (selection mAP@0.5 0.04)."""
    import numpy as np

    prior = -np.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    for head, value in ((detector.box_head, 0.0), (detector.classification_head, prior)):
        bias = head.prediction_layer.bias
        bias.assign(np.full(bias.shape, value, dtype="float32"))


def check_nms_iou(nms_iou) -> float:
    """``nms_iou`` as a float in (0, 1), or a ConfigError repeating it."""
    if isinstance(nms_iou, bool) or not isinstance(nms_iou, int | float) or not 0 < nms_iou < 1:
        raise ConfigError(f"nms_iou must be a number between 0 and 1, got {nms_iou!r}")
    return float(nms_iou)


def set_nms_iou(detector, nms_iou: float) -> None:
    """Make the detector's decoder drop boxes overlapping a better one by more than
    ``nms_iou`` (decoders compiled before keep their value)."""
    detector.prediction_decoder.iou_threshold = check_nms_iou(nms_iou)


def compiled_decoder(detector):
    """KerasHub's ``decode_predictions`` (anchors, box deltas, non-max suppression) as one
    TensorFlow graph: 4x faster than eager per call (measured 173 -> 41 ms at batch 1, with
    KerasHub's own suppression)."""
    import tensorflow as tf

    def decode(raw, images):
        return detector.decode_predictions(raw, images)

    return tf.function(decode)  # one graph per batch size: the decoder needs a fixed batch


def compiled_forward(detector):
    """The detector's raw outputs (box deltas and class logits by name) in inference mode, as
    one TensorFlow graph that reads the weights at each call (they may be training)."""
    import tensorflow as tf

    def forward(images):
        return detector(images, training=False)

    return tf.function(forward, reduce_retracing=True)


def per_image(decoded) -> list[tuple]:
    """A decoder's padded batch as ``(boxes, labels, scores)`` per image, padding cut off."""
    import numpy as np

    counts = np.asarray(decoded["num_detections"])
    boxes, labels = np.asarray(decoded["boxes"]), np.asarray(decoded["labels"])
    scores = np.asarray(decoded["confidence"])
    return [
        (boxes[i, :kept], labels[i, :kept].astype(int), scores[i, :kept])
        for i, kept in enumerate(counts.astype(int))
    ]


def detector_settings(config) -> dict:
    """The keyword arguments of :func:`create_detector` a ``DetectPhaseConfig`` asks for (they
    go into the model's metadata, so an export can be decoded the same way)."""
    return {
        "max_level": config.max_level,
        "anchor_size": config.anchor_size,
        "confidence": config.confidence,
        "head_convs": config.head_convs,
        "aspect_ratios": list(config.aspect_ratios),
        "nms_iou": config.nms_iou or DEFAULT_NMS_IOU,
        "max_detections": config.max_detections,
    }
