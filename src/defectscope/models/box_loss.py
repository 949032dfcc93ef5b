"""The detector's box loss (``detect.box_loss``): smooth L1 on KerasHub's anchor deltas, or
CIoU of the boxes they decode to (Keras' ``compute_ciou``), which scores what mAP@0.5 scores,
the overlap of a box with its true box, plus the smooth L1 term, which keeps every prediction
drawn to its target where CIoU's gradient vanishes or pushes boxes outwards."""

from __future__ import annotations

import math
from functools import cache

from defectscope.core.errors import ConfigError
from defectscope.models.anchors import BOX_FORMAT, anchor_boxes, anchor_settings

BOX_LOSSES = ("smooth_l1", "ciou")
# an IoU loss beside the focal loss has twice its weight in mmdetection's ATSS and GFL configs
# (DETR adds it to an L1 term too: 2 GIoU + 5 L1)
CIOU_LOSS_WEIGHT = 2.0
# log-size deltas are clipped to +-this before decoding (detectron2's bbox_xform_clip): an
# untrained head cannot overflow exp(), and no box collapses to zero width, where CIoU's
# aspect term is NaN in a TensorFlow graph (the unmatched anchors' targets sit near -20)
MAX_SIZE_DELTA = math.log(1000.0 / 16)


def check_box_loss(name: object) -> str:
    """``name`` if it is one of :data:`BOX_LOSSES`; a ConfigError repeating it otherwise."""
    if name not in BOX_LOSSES:
        raise ConfigError(f"detect.box_loss must be one of {', '.join(BOX_LOSSES)}, got {name!r}")
    return name


@cache
def _ciou_loss_class():
    import keras
    from keras_hub.src.layers.modeling.anchor_generator import AnchorGenerator

    @keras.saving.register_keras_serializable(package="defectscope")
    class CIoUBoxLoss(keras.losses.Loss):
        """Per anchor, :data:`CIOU_LOSS_WEIGHT` x (1 - CIoU) between the boxes that the true
        and predicted deltas give (``center_xywh`` coding, no variance: KerasHub's label
        encoder and decoder), plus smooth L1 of the deltas with ``l1_beta`` (/ beta; None:
        none). Without the L1 term a head whose first outputs lie beyond the log-size clip
        gets no gradient there: on NEU-DET the sizes ran away and selection mAP stayed 0.
        Anchors without a true box carry degenerate targets; their sample weight (0) removes
        them, and non-finite targets are zeroed first so that it also zeroes gradients."""

        def __init__(self, anchor_generator: dict, image_size: int, l1_beta=None, **kwargs):
            kwargs.setdefault("name", "ciou_box_loss")
            kwargs.setdefault("reduction", "sum")
            super().__init__(**kwargs)
            self.anchor_generator, self.image_size = dict(anchor_generator), int(image_size)
            self.l1_beta = None if l1_beta is None else float(l1_beta)
            generator = AnchorGenerator(**self.anchor_generator)
            self.anchors = anchor_boxes(generator, self.image_size)

        def call(self, y_true, y_pred):
            from keras import ops

            y_true = ops.where(ops.isfinite(y_true), y_true, ops.zeros_like(y_true))
            loss = CIOU_LOSS_WEIGHT * (1.0 - self._ciou(y_true, y_pred))
            if self.l1_beta is not None:
                huber = keras.losses.huber(y_true, y_pred, delta=self.l1_beta)
                loss = loss + huber / self.l1_beta
            return loss

        def _ciou(self, y_true, y_pred):
            from keras import ops
            from keras.utils import bounding_boxes

            anchors = ops.convert_to_tensor(self.anchors, dtype=y_pred.dtype)
            boxes = []
            for deltas in (y_true, y_pred):
                sizes = ops.clip(deltas[..., 2:], -MAX_SIZE_DELTA, MAX_SIZE_DELTA)
                boxes.append(
                    bounding_boxes.decode_deltas_to_boxes(
                        anchors=anchors,
                        boxes_delta=ops.concatenate([deltas[..., :2], sizes], axis=-1),
                        anchor_format=BOX_FORMAT,
                        box_format=BOX_FORMAT,
                        encoded_format="center_xywh",
                    )
                )
            return bounding_boxes.compute_ciou(*boxes, BOX_FORMAT)

        def get_config(self) -> dict:
            config = super().get_config()
            config.update(
                anchor_generator=self.anchor_generator,
                image_size=self.image_size,
                l1_beta=self.l1_beta,
            )
            return config

    return CIoUBoxLoss


def register_box_losses() -> None:
    """Make :func:`create_box_loss`'s loss known to Keras (a compiled detector saves it)."""
    _ciou_loss_class()


def create_box_loss(name: str, detector, beta: float = 1.0) -> tuple:
    """The box loss ``name`` for ``detector``'s anchors and its weight beside the focal loss:
    smooth L1 with ``beta`` (Huber(beta) / beta, so beta 1 is KerasHub's Huber), or CIoU plus
    that smooth L1."""
    import keras

    if check_box_loss(name) == "smooth_l1":
        return keras.losses.Huber(delta=beta, reduction="sum"), 1.0 / beta
    size = detector.backbone.image_encoder.image_size
    return _ciou_loss_class()(anchor_settings(detector), size, l1_beta=beta), 1.0
