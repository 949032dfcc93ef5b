"""Training-only augmentation on float32 images in [0, 255], driven by stateless seeds.

Every random choice comes from a per-image seed pair, so a run with the same seed sees the same
augmented images whatever the parallelism of the input pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

from defectscope.core.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and how strong they are (0 or False turns one off).

    The defaults train under the camera corruptions a line sees (noise, blur, brightness and
    contrast changes, rotations); measured on NEU-DET they keep clean accuracy and raise the
    accuracy under corruptions (docs/reliability.md). Preset ``light`` has flips only.
    """

    flip: bool = True  # left-right and up-down, each with probability 1/2
    rotate90: bool = True  # k * 90 degrees, k uniform in 0..3
    brightness: float = 0.3  # max shift, as a fraction of 255
    contrast: float = 0.5  # contrast factor drawn in [1 - c, 1 + c]
    noise_prob: float = 0.5  # probability of additive Gaussian noise
    noise_std: float = 24.0  # max noise standard deviation, in pixel levels
    blur_prob: float = 0.4  # probability of a Gaussian blur
    blur_sigma: float = 2.5  # max blur sigma, in pixels

    def __post_init__(self) -> None:
        for name in (
            "brightness",
            "contrast",
            "noise_prob",
            "noise_std",
            "blur_prob",
            "blur_sigma",
        ):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"augment.{name} must be >= 0, got {value!r}")
        for name in ("noise_prob", "blur_prob"):
            if getattr(self, name) > 1:
                raise ConfigError(f"augment.{name} must be <= 1, got {getattr(self, name)!r}")


def _gaussian_kernel(sigma, radius: int):
    import tensorflow as tf

    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    weights = tf.exp(-(x**2) / (2.0 * tf.maximum(sigma, 1e-3) ** 2))
    weights /= tf.reduce_sum(weights)
    kernel = weights[:, None] * weights[None, :]
    return tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])


def gaussian_blur(image, sigma, radius: int = 4):
    """Blur one ``(H, W, 3)`` float image with a Gaussian of the given sigma (reflect padding)."""
    import tensorflow as tf

    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, _gaussian_kernel(sigma, radius), [1, 1, 1, 1], "VALID")
    return blurred[0]


def augment_image(image, seed, config: AugmentConfig):
    """Apply ``config`` to one float32 ``(H, W, 3)`` image in [0, 255] with a ``[2]`` int seed."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)

    def draw(i: int):
        return tf.random.stateless_uniform([], seeds[i])

    if config.flip:
        image = tf.cond(draw(0) < 0.5, lambda: tf.image.flip_left_right(image), lambda: image)
        image = tf.cond(draw(1) < 0.5, lambda: tf.image.flip_up_down(image), lambda: image)
    if config.rotate90:
        k = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=4, dtype=tf.int32)
        image = tf.image.rot90(image, k)
    if config.brightness:
        image = image + (draw(3) * 2.0 - 1.0) * config.brightness * 255.0
    if config.contrast:
        factor = 1.0 + (draw(4) * 2.0 - 1.0) * config.contrast
        mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
        image = (image - mean) * factor + mean
    if config.noise_prob:
        std = draw(5) * config.noise_std
        noise = tf.random.stateless_normal(tf.shape(image), seeds[6]) * std
        image = tf.cond(draw(7) < config.noise_prob, lambda: image + noise, lambda: image)
    if config.blur_prob:
        sigma = 0.3 + draw(8) * config.blur_sigma
        use_blur = tf.random.stateless_uniform([], seeds[8] + 1) < config.blur_prob
        image = tf.cond(use_blur, lambda: gaussian_blur(image, sigma), lambda: image)
    return tf.clip_by_value(image, 0.0, 255.0)
