"""The detector's box loss (``detect.box_loss``): smooth L1 on KerasHub's anchor deltas, or the
CIoU of the boxes they decode to (Keras' ``compute_ciou``), which scores what mAP@0.5 scores,
the overlap of a box with its true box, rather than each coordinate apart."""

from __future__ import annotations

import math
from functools import cache

from defectscope.core.errors import ConfigError
from defectscope.models.anchors import BOX_FORMAT, anchor_boxes

BOX_LOSSES = ("smooth_l1", "ciou")
# an IoU loss beside the focal loss has twice its weight in mmdetection's ATSS and GFL configs
CIOU_LOSS_WEIGHT = 2.0
# log-size deltas are clipped to +-this before decoding (detectron2's bbox_xform_clip): an
# untrained head cannot overflow exp(), and no box collapses to zero width, where CIoU's
# aspect term is NaN in a TensorFlow graph (the unmatched anchors' targets sit near -20)
MAX_SIZE_DELTA = math.log(1000.0 / 16)


def check_box_loss(name) -> str:
    if name not in BOX_LOSSES:
        raise ConfigError(f"detect.box_loss must be one of {', '.join(BOX_LOSSES)}, got {name!r}")
    return name


@cache
def _ciou_loss_class():
    import keras
    from keras_hub.src.layers.modeling.anchor_generator import AnchorGenerator

    @keras.saving.register_keras_serializable(package="defectscope")
    class CIoUBoxLoss(keras.losses.Loss):
        """1 - CIoU between the boxes that the true and predicted deltas give on each anchor
        (``center_xywh`` coding, no variance: KerasHub's label encoder and decoder). Anchors
        without a true box carry degenerate targets; their sample weight (0) removes them, and
        non-finite targets are zeroed first so that the zero weight also zeroes gradients."""

        def __init__(self, anchor_generator: dict, image_size: int, **kwargs):
            kwargs.setdefault("name", "ciou_box_loss")
            kwargs.setdefault("reduction", "sum")
            super().__init__(**kwargs)
            self.anchor_generator, self.image_size = dict(anchor_generator), int(image_size)
            generator = AnchorGenerator(**self.anchor_generator)
            self.anchors = anchor_boxes(generator, self.image_size)

        def call(self, y_true, y_pred):
            from keras import ops
            from keras.utils import bounding_boxes

            y_true = ops.where(ops.isfinite(y_true), y_true, ops.zeros_like(y_true))
            y_true, y_pred = (
                ops.concatenate(
                    [deltas[..., :2], ops.clip(deltas[..., 2:], -MAX_SIZE_DELTA, MAX_SIZE_DELTA)],
                    axis=-1,
                )
                for deltas in (y_true, y_pred)
            )
            anchors = ops.convert_to_tensor(self.anchors, dtype=y_pred.dtype)
            true_boxes, predicted_boxes = (
                bounding_boxes.decode_deltas_to_boxes(
                    anchors=anchors,
                    boxes_delta=deltas,
                    anchor_format=BOX_FORMAT,
                    box_format=BOX_FORMAT,
                    encoded_format="center_xywh",
                )
                for deltas in (y_true, y_pred)
            )
            return 1.0 - bounding_boxes.compute_ciou(true_boxes, predicted_boxes, BOX_FORMAT)

        def get_config(self) -> dict:
            config = super().get_config()
            config.update(anchor_generator=self.anchor_generator, image_size=self.image_size)
            return config

    return CIoUBoxLoss


def register_box_losses() -> None:
    """Make :func:`create_box_loss`'s loss known to Keras (a compiled detector saves it)."""
    _ciou_loss_class()


def create_box_loss(name: str, detector, beta: float = 1.0) -> tuple:
    """The box loss ``name`` for ``detector``'s anchors and its weight beside the focal loss:
    smooth L1 with ``beta`` (Huber(beta) / beta, so beta 1 is KerasHub's Huber), or CIoU."""
    import keras

    if check_box_loss(name) == "smooth_l1":
        return keras.losses.Huber(delta=beta, reduction="sum"), 1.0 / beta
    generator = {
        key: value
        for key, value in detector.anchor_generator.get_config().items()
        if key not in ("name", "trainable", "dtype")
    }
    size = detector.backbone.image_encoder.image_size
    return _ciou_loss_class()(generator, size), CIOU_LOSS_WEIGHT
