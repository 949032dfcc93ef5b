"""The model builder: named layers, scaling inside the model, weights options, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

from defectscope.core.errors import ConfigError
from defectscope.models.xception import (
    BACKBONE_NAME,
    create_feature_extractor,
    create_head_model,
    create_model,
    resolve_weights,
    set_trainable_blocks,
)


@pytest.fixture(scope="module")
def model():
    return create_model(num_classes=4, image_size=71, weights="none", dropout=0.2)


def test_layers_are_named_and_output_is_logits(model) -> None:
    names = [layer.name for layer in model.layers]
    assert names == [
        "image",
        "pixel_scaling",
        BACKBONE_NAME,
        "avg_pool",
        "head_dropout",
        "predictions",
    ]
    images = np.random.default_rng(0).uniform(0, 255, (2, 71, 71, 3)).astype("float32")
    logits = np.asarray(model(images, training=False))
    assert logits.shape == (2, 4)
    assert model.get_layer("predictions").activation.__name__ == "linear"  # energy needs logits
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.all(probabilities > 0) and np.all(probabilities < 1)


def test_pixel_scaling_maps_0_255_to_minus_1_1(model) -> None:
    scaling = model.get_layer("pixel_scaling")
    values = np.asarray(scaling(np.array([[0.0, 127.5, 255.0]], "float32")))
    np.testing.assert_allclose(values, [[-1.0, 0.0, 1.0]])


def test_head_model_shares_the_head_weights(model) -> None:
    head = create_head_model(model)
    features = create_feature_extractor(model)
    images = np.full((1, 71, 71, 3), 100.0, "float32")
    direct = np.asarray(model(images, training=False))
    via_head = np.asarray(head(features(images, training=False), training=False))
    np.testing.assert_allclose(direct, via_head, rtol=1e-5, atol=1e-6)


def test_unfreezing_top_blocks(model) -> None:
    backbone = model.get_layer(BACKBONE_NAME)
    assert set_trainable_blocks(model, "block14", freeze_batchnorm=False) == 4  # 2 convs + 2 BN
    assert set_trainable_blocks(model, "block14") == 2  # batch norms stay frozen by default
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable == ["block14_sepconv1", "block14_sepconv2"]
    assert set_trainable_blocks(model, "none") == 0
    assert not backbone.trainable
    with pytest.raises(ValueError, match="got 'block99'"):
        set_trainable_blocks(model, "block99")


def test_weights_arguments(monkeypatch, tmp_path) -> None:
    from defectscope.models import xception

    monkeypatch.delenv(xception.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(xception, "_can_download", lambda: False)
    with pytest.raises(ConfigError, match=r"no internet.*--weights PATH"):
        resolve_weights("imagenet")  # one line, not Keras' traceback about a URL fetch
    monkeypatch.setattr(xception, "_can_download", lambda: True)
    assert resolve_weights("imagenet") == "imagenet"
    local = tmp_path / "xception_imagenet_notop.weights.h5"
    local.write_bytes(b"")
    monkeypatch.setenv(xception.WEIGHTS_ENV, str(local))
    assert resolve_weights("imagenet") == str(local)
    assert resolve_weights("none") is None and resolve_weights(None) is None
    with pytest.raises(ConfigError, match=r"'missing\.weights\.h5'"):
        resolve_weights("missing.weights.h5")


def test_keras3_weights_under_another_name_get_a_clear_error(model, tmp_path) -> None:
    keras3 = tmp_path / "xception.weights.h5"
    model.save_weights(keras3)
    assert resolve_weights(keras3) == str(keras3)
    renamed = tmp_path / "W.h5"
    renamed.write_bytes(keras3.read_bytes())
    with pytest.raises(ValueError, match=r"'.*W\.h5'.*\*\.weights\.h5"):
        resolve_weights(renamed)
    import h5py

    legacy = tmp_path / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"  # Keras 2 style
    with h5py.File(legacy, "w") as handle:
        handle.attrs["layer_names"] = [b"block1_conv1"]
    assert resolve_weights(legacy) == str(legacy)
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        create_model(1, 71, "none")
    with pytest.raises(ValueError, match="image_size >= 71, got 32"):
        create_model(3, 32, "none")


@pytest.mark.real_data
def test_shared_imagenet_weights_load(xception_weights) -> None:
    loaded = create_model(6, 71, str(xception_weights))
    kernel = loaded.get_layer(BACKBONE_NAME).get_layer("block1_conv1").kernel
    assert float(np.abs(np.asarray(kernel)).mean()) > 0.01


def _moving_statistics(model) -> list[np.ndarray]:
    import keras

    backbone = model.get_layer("xception")
    return [
        layer.moving_mean.numpy().copy()
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


@pytest.mark.parametrize("freeze", [True, False])
def test_fine_tuning_leaves_batchnorm_statistics_alone(freeze: bool) -> None:
    """Keras 3 updates a trainable BatchNormalization during fit even when the backbone is
    called with training=False; freezing it is what keeps phase 1's statistics."""
    import keras

    model = create_model(num_classes=3, image_size=71, weights="none", pretrained=True)
    set_trainable_blocks(model, "block9", freeze_batchnorm=freeze)
    before = _moving_statistics(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (8, 71, 71, 3)).astype("float32")
    model.fit(images, np.eye(3)[np.arange(8) % 3], epochs=1, verbose=0)
    after = _moving_statistics(model)
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert (changed == 0) if freeze else (changed > 0)
