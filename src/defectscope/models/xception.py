"""Xception classifier: pixel scaling inside the model, ImageNet backbone, a small named head.

Layer names are fixed so that checkpoints, feature caches and fine-tuning can address them:
``pixel_scaling`` -> ``xception`` (backbone) -> ``avg_pool`` -> ``head_dropout`` -> ``predictions``.
The model outputs logits (``metadata.json``: ``"output": "logits"``); the classifier applies the
softmax, and the logits also give the energy score of "unknown" images.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

from defectscope.core.errors import ConfigError

SCALING_NAME = "pixel_scaling"
BACKBONE_NAME = "xception"
FEATURES_NAME = "avg_pool"
DROPOUT_NAME = "head_dropout"
PREDICTIONS_NAME = "predictions"
HEAD_LAYERS = (DROPOUT_NAME, PREDICTIONS_NAME)
XCEPTION_BLOCKS = tuple(f"block{i}" for i in range(1, 15))
MIN_IMAGE_SIZE = 71  # Xception's smallest input


WEIGHTS_ENV = "DEFECTSCOPE_WEIGHTS"
KERAS_WEIGHTS_FILE = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/xception/" + KERAS_WEIGHTS_FILE
)


@functools.cache
def _can_download(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _imagenet_weights() -> str:
    """``$DEFECTSCOPE_WEIGHTS``, else Keras' cached or downloadable file ("imagenet"); offline
    without either, one clear line instead of Keras' traceback about a URL fetch."""
    if os.environ.get(WEIGHTS_ENV):
        return resolve_weights(os.environ[WEIGHTS_ENV]) or "imagenet"
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    if (keras_home / "models" / KERAS_WEIGHTS_FILE).is_file() or _can_download():
        return "imagenet"
    raise ConfigError(
        "the ImageNet weights of Xception are not on this machine and it cannot download them "
        f"(no internet): fetch {WEIGHTS_URL} once, then pass --weights PATH (or set "
        f"{WEIGHTS_ENV}=PATH)"
    )


def resolve_weights(weights: str | Path | None) -> str | None:
    """``imagenet`` (``$DEFECTSCOPE_WEIGHTS`` or Keras' download), ``none``/None (random) or a
    path to a weights file (Keras 3 ``.weights.h5`` or Keras' own ``.h5``)."""
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights) == "imagenet":
        return _imagenet_weights()
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(
            f"weights file not found: {str(weights)!r} (use 'imagenet', 'none' or a path to "
            "xception_imagenet_notop.weights.h5)"
        )
    if not path.name.endswith(".weights.h5") and not _is_legacy_h5(path):
        raise ConfigError(  # Keras picks the loader by the file name
            f"weights file {str(weights)!r} is in the Keras 3 format but not named "
            "*.weights.h5; rename it (e.g. xception_imagenet_notop.weights.h5)"
        )
    return str(path)


def _is_legacy_h5(path: Path) -> bool:
    """A Keras 2 weights file (``layer_names`` attribute), such as Keras' own download."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return "layer_names" in handle.attrs
    except OSError:
        return True  # not HDF5 at all: let Keras report it


def create_backbone(image_size: int, weights: str | Path | None = "imagenet"):
    """The Xception feature extractor (no top) for square RGB inputs in [-1, 1]."""
    import keras

    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"Xception needs image_size >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    backbone = keras.applications.Xception(
        include_top=False,
        weights=resolve_weights(weights),
        input_shape=(image_size, image_size, 3),
    )
    backbone.name = BACKBONE_NAME
    return backbone


def create_model(
    num_classes: int,
    image_size: int = 200,
    weights: str | Path | None = "imagenet",
    dropout: float = 0.3,
    pretrained: bool | None = None,
):
    """Xception classifier: float images in [0, 255] (any entry point feeds those) -> logits.

    ``pretrained`` sets the BatchNormalization behaviour (frozen statistics when True); by
    default it follows ``weights``. Pass it to build a copy that will load trained weights.
    The logits stay float32 under a mixed-precision policy.
    """
    import keras

    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    backbone = create_backbone(image_size, weights)
    if pretrained is None:
        pretrained = resolve_weights(weights) is not None
    if not pretrained:
        for layer in backbone.layers:  # from scratch: let BN statistics settle within few steps
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=SCALING_NAME)(inputs)
    # Pretrained: BatchNormalization stays in inference mode while fine-tuning (its statistics
    # come from ImageNet). Random weights: it must learn its statistics, so it follows training.
    x = backbone(x, training=False if pretrained else None)
    x = keras.layers.GlobalAveragePooling2D(name=FEATURES_NAME)(x)
    x = keras.layers.Dropout(dropout, name=DROPOUT_NAME)(x)
    outputs = keras.layers.Dense(num_classes, name=PREDICTIONS_NAME, dtype="float32")(x)
    return keras.Model(inputs, outputs, name="defectscope_xception")  # logits, float32


def create_head_model(model):
    """A model on pooled features sharing ``model``'s head layers (phase 1 trains it)."""
    import keras

    features = keras.Input(model.get_layer(FEATURES_NAME).output.shape[1:], name="features")
    x = model.get_layer(DROPOUT_NAME)(features)
    return keras.Model(features, model.get_layer(PREDICTIONS_NAME)(x), name="head")


def create_feature_extractor(model):
    """The frozen part of ``model``: images in [0, 255] -> pooled backbone features."""
    import keras

    return keras.Model(model.input, model.get_layer(FEATURES_NAME).output, name="features")


def set_trainable_blocks(model, unfreeze_from: str | None, freeze_batchnorm: bool = True) -> int:
    """Freeze the backbone below ``unfreeze_from`` (``block13``, ``all`` or None for frozen).

    ``freeze_batchnorm`` keeps every BatchNormalization layer frozen, which in Keras 3 is what
    keeps it in inference mode: calling the backbone with ``training=False`` does not stop a
    trainable BatchNormalization from updating its moving statistics during ``fit`` (measured:
    17 of 40 layers drifted in one step), and that drift undid what phase 1 had learned.
    Pretrained backbones want it; one trained from random weights must learn its statistics.
    Returns the number of trainable backbone layers. The head is always trainable.
    """
    import keras

    backbone = model.get_layer(BACKBONE_NAME)
    if unfreeze_from is None or unfreeze_from == "none":
        backbone.trainable = False
        return 0
    if unfreeze_from not in (*XCEPTION_BLOCKS, "all"):
        raise ConfigError(
            f"unfreeze_from must be block1..block14, 'all' or 'none', got {unfreeze_from!r}"
        )
    backbone.trainable = True
    names = [layer.name for layer in backbone.layers]
    start = 0
    if unfreeze_from != "all":
        start = next(i for i, name in enumerate(names) if name.startswith(f"{unfreeze_from}_"))
    for index, layer in enumerate(backbone.layers):
        frozen_norm = freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= start and not frozen_norm
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)
