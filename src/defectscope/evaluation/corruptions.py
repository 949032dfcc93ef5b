"""Camera corruptions at five severities (ImageNet-C style) and accuracy under each.

Images are float32 in [0, 255] at the model's input size. Severities (one row per corruption):

| corruption | parameter | 1 | 2 | 3 | 4 | 5 |
| --- | --- | --- | --- | --- | --- | --- |
| gaussian_noise | std, fraction of 255 | 0.04 | 0.06 | 0.08 | 0.10 | 0.12 |
| shot_noise | photons per unit level | 60 | 25 | 12 | 5 | 3 |
| gaussian_blur | sigma, pixels | 0.5 | 1.0 | 1.5 | 2.0 | 3.0 |
| motion_blur | horizontal kernel length, pixels | 3 | 5 | 7 | 9 | 13 |
| jpeg_compression | JPEG quality | 25 | 18 | 15 | 10 | 7 |
| brightness | shift, fraction of 255 | 0.10 | 0.20 | 0.30 | 0.40 | 0.50 |
| contrast | contrast factor | 0.60 | 0.45 | 0.30 | 0.20 | 0.10 |
| rotate90 | transform | 90 | 180 | 270 | 90 + flip lr | 90 + flip ud |
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from defectscope.core.errors import ConfigError
from defectscope.data.augment import gaussian_blur
from defectscope.data.pipeline import create_dataset

SEVERITIES = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.10, 0.12),
    "shot_noise": (60, 25, 12, 5, 3),
    "gaussian_blur": (0.5, 1.0, 1.5, 2.0, 3.0),
    "motion_blur": (3, 5, 7, 9, 13),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.1),
    "rotate90": (1, 2, 3, 4, 5),
}
CORRUPTIONS = tuple(SEVERITIES)


def _gaussian_noise(images, value, seed):
    import tensorflow as tf

    return images + tf.random.stateless_normal(tf.shape(images), seed) * value * 255.0


def _shot_noise(images, value, seed):
    import tensorflow as tf

    photons = tf.random.stateless_poisson(tf.shape(images), seed, images / 255.0 * value)
    return photons / value * 255.0


def _gaussian_blur(images, value, seed):
    import tensorflow as tf

    return tf.map_fn(lambda image: gaussian_blur(image, float(value)), images)


def _motion_blur(images, value, seed):
    import tensorflow as tf

    length = int(value)
    kernel = tf.ones([1, length, 3, 1], tf.float32) / length
    pad = length // 2
    padded = tf.pad(images, [[0, 0], [0, 0], [pad, length - 1 - pad], [0, 0]], "SYMMETRIC")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")


def _jpeg_compression(images, value, seed):
    import tensorflow as tf

    def compress(image):
        encoded = tf.io.encode_jpeg(
            tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=int(value)
        )
        return tf.cast(tf.io.decode_jpeg(encoded, channels=3), tf.float32)

    return tf.map_fn(compress, images)


def _brightness(images, value, seed):
    return images + value * 255.0


def _contrast(images, value, seed):
    import tensorflow as tf

    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * value + mean


def _rotate90(images, value, seed):
    import tensorflow as tf

    level = int(value)
    rotated = tf.image.rot90(images, k=min(level, 3) if level <= 3 else 1)
    if level == 4:
        rotated = tf.image.flip_left_right(rotated)
    if level == 5:
        rotated = tf.image.flip_up_down(rotated)
    return rotated


FUNCTIONS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
    "jpeg_compression": _jpeg_compression,
    "brightness": _brightness,
    "contrast": _contrast,
    "rotate90": _rotate90,
}


def corrupt(images, name: str, severity: int, seed: tuple[int, int] = (0, 0)):
    """Apply corruption ``name`` at ``severity`` (1-5) to a float batch; result in [0, 255]."""
    import tensorflow as tf

    if name not in FUNCTIONS:
        raise ConfigError(f"unknown corruption {name!r}; choose from {CORRUPTIONS}")
    if not 1 <= severity <= 5:
        raise ConfigError(f"severity must be 1..5, got {severity!r}")
    images = tf.convert_to_tensor(images, tf.float32)
    value = SEVERITIES[name][severity - 1]
    return tf.clip_by_value(FUNCTIONS[name](images, value, tf.constant(seed, tf.int64)), 0.0, 255.0)


def parse_corruptions(text: str) -> list[str]:
    """``"all"`` or comma-separated corruption names -> names, each known."""
    names = list(CORRUPTIONS) if text == "all" else [n for n in text.split(",") if n]
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown or not names:
        raise ConfigError(f"unknown corruption(s) {unknown or text!r}; choose from {CORRUPTIONS}")
    return names


def parse_severities(text: str) -> list[int]:
    """``"1-5"``, ``"1,3"`` or ``"2"`` -> severities, each in 1..5."""
    levels: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        try:
            levels.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            raise ConfigError(f"severities look like 1-5 or 1,3; got {text!r}") from None
    if not levels or min(levels) < 1 or max(levels) > 5:
        raise ConfigError(f"severities must lie in 1..5, got {text!r}")
    return sorted(set(levels))


def robustness(classifier, source, names, severities, batch_size: int = 32):
    """``{corruption: {severity: accuracy}}`` of a classifier and the mean over all of them."""
    predict_batch = classifier.predict_arrays
    dataset = create_dataset(
        source, image_size=classifier.image_size, batch_size=batch_size, resize=classifier.resize
    )
    batches = [(images, labels.numpy()) for images, labels in dataset]
    table: dict[str, dict[str, float]] = {}
    for name in names:
        table[name] = {}
        for severity in severities:
            correct = total = 0
            for index, (images, labels) in enumerate(batches):
                corrupted = corrupt(images, name, severity, seed=(severity, index)).numpy()
                correct += int((np.asarray(predict_batch(corrupted)).argmax(1) == labels).sum())
                total += len(labels)
            table[name][str(severity)] = correct / total
    every = [acc for row in table.values() for acc in row.values()]
    return table, float(np.mean(every))
