"""Image decoding shared by conversion, training, evaluation, prediction and the service.

Every image enters defectscope through :func:`canonical_image`: Pillow opens the bytes, refuses
anything that is not a readable image (or is too large), and returns bytes that TensorFlow decodes
to a 3-channel ``uint8`` array. Plain 8-bit grey or RGB JPEG/PNG files pass through untouched; every
other mode or format (CMYK, RGBA, palette, 16-bit, BMP, GIF, TIFF, EXIF-rotated) is converted once
and re-encoded losslessly as PNG. Validation also decodes the bytes with TensorFlow itself, so a
file Pillow tolerates but TensorFlow refuses (a PNG with a bad CRC, say) is refused here, with its
reason, and never reaches a tf.data graph.

The pixels the model sees come from :func:`decode_image_tensor` only (in the graph for TFRecords,
eagerly through :func:`decode_pixels` for files and uploads): a JPEG much larger than the model's
input is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (its short side stays at least twice the
input size), so an 8000x8000 image costs 1/64 of its full-size memory, the same way everywhere.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from defectscope.core.errors import FileError
from defectscope.core.files import DEFAULT_MAX_IMAGE_BYTES, read_regular_file

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000  # refuse decompression bombs; NEU images have 40,000 pixels
JPEG_RATIOS = (1, 2, 4, 8)  # the scales libjpeg decodes at
MIN_DECODE_SCALE = 2  # a scaled JPEG keeps a short side of at least 2x the model input
JPEG_MAGIC = b"\xff\xd8"
_PASS_THROUGH = {("JPEG", "L"), ("JPEG", "RGB"), ("PNG", "L"), ("PNG", "RGB")}
_EXIF_ORIENTATION = 0x0112


class ImageDecodeError(FileError):
    """An image file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class CanonicalImage:
    """Bytes TensorFlow can decode to the canonical RGB uint8 image, with its size."""

    encoded: bytes
    format: str  # "jpeg" or "png": what ``encoded`` holds
    width: int
    height: int
    source_format: str  # what the file was, e.g. "BMP"
    source_mode: str  # Pillow mode of the file, e.g. "CMYK"


def is_image_path(path: str | Path) -> bool:
    """Whether a file name has one of the supported image extensions."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any Pillow image to a ``(H, W, 3)`` uint8 array (16-bit scaled, alpha dropped)."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        grey = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageDecodeError(name, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(name, f"refused as a possible decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not a readable image") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(name, f"not a readable image ({err})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(name, f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            name,
            f"{width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} (possible decompression bomb)",
        )
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation known without decoding the pixels (a PNG's eXIf chunk counts when
    it precedes the image data; asking Pillow for a later one would decode the whole image)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return image.getexif().get(_EXIF_ORIENTATION, 1)


def _passes_through(data: bytes, source_format: str, source_mode: str) -> bool:
    """Whether TensorFlow decodes these bytes to the same 8-bit pixels as Pillow."""
    if (source_format, source_mode) not in _PASS_THROUGH:
        return False
    png_bit_depth = data[24] if len(data) > 24 else 0  # IHDR: width, height, then bit depth
    return source_format != "PNG" or png_bit_depth == 8


def _plain(image: Image.Image, data: bytes, name: str) -> bool:
    """A JPEG or PNG TensorFlow decodes as it is (8-bit grey or RGB, no EXIF rotation among
    the chunks before the image data), so TensorFlow alone decodes (and so validates) it."""
    format_ = image.format or ""
    try:
        return _passes_through(data, format_, image.mode) and _orientation(image) == 1
    except (OSError, SyntaxError, ValueError) as err:  # a damaged EXIF block
        raise ImageDecodeError(name, f"corrupt image metadata ({err})") from None


def canonical_image(
    data: bytes,
    name: str = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verify: bool = True,
) -> CanonicalImage:
    """Validate encoded image bytes fully and return bytes in the canonical form.

    ``verify`` decodes the result with TensorFlow, the decoder of every later step, so that what
    is accepted here decodes there. (A plain JPEG is then decoded by TensorFlow alone.)

    Raises:
        ImageDecodeError: empty, corrupt, truncated, unknown or oversized images.
    """
    image = _open_checked(data, name, max_pixels)
    width, height = image.size
    source = (image.format or "unknown", image.mode)
    if verify and _plain(image, data, name):
        _tensorflow_decode(data, name, ratio=1)
        return CanonicalImage(data, source[0].lower(), width, height, *source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()  # full decode: catches truncated and corrupt data
            orientation = _orientation(image)
            if orientation != 1:
                image = ImageOps.exif_transpose(image)
                width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(name, f"corrupt or truncated image ({err})") from None
    if _passes_through(data, *source) and orientation == 1:
        canonical = CanonicalImage(data, source[0].lower(), width, height, *source)
    else:
        buffer = io.BytesIO()
        Image.fromarray(to_rgb_array(image)).save(buffer, format="PNG", compress_level=1)
        canonical = CanonicalImage(buffer.getvalue(), "png", width, height, *source)
    if verify:
        _tensorflow_decode(canonical.encoded, name, ratio=1)
    return canonical


def read_canonical_image(
    path: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    root: Path | None = None,
    verify: bool = True,
) -> CanonicalImage:
    """Read (a regular file, bounded) and validate one image; errors name the file."""
    try:
        data = read_regular_file(path, max_bytes, root)
    except FileError as err:
        raise ImageDecodeError(err.path, err.reason) from None
    return canonical_image(data, name=str(path), max_pixels=max_pixels, verify=verify)


def jpeg_ratio(width: int, height: int, image_size: int | None) -> int:
    """The libjpeg scale (1, 2, 4 or 8) a JPEG of this size is decoded at for ``image_size``."""
    if image_size is None:
        return 1
    short = min(width, height)
    return max(r for r in JPEG_RATIOS if short // r >= MIN_DECODE_SCALE * image_size or r == 1)


def _decode_jpeg_scaled(encoded, image_size: int):
    import tensorflow as tf

    shape = tf.io.extract_jpeg_shape(encoded)
    short = tf.minimum(shape[0], shape[1])
    index = tf.add_n(
        [tf.cast(short // r >= MIN_DECODE_SCALE * image_size, tf.int32) for r in JPEG_RATIOS[1:]]
    )
    branches = [lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for r in JPEG_RATIOS]
    return tf.switch_case(index, branches)


def decode_image_tensor(encoded, image_size: int | None = None):
    """Canonical bytes -> a ``(H, W, 3)`` uint8 tensor: the one decode of every entry point.

    With ``image_size`` a large JPEG is decoded at a reduced scale (see :func:`jpeg_ratio`).
    """
    import tensorflow as tf

    def full():
        return tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)

    if image_size is None:
        image = full()
    else:
        is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 2), JPEG_MAGIC)
        image = tf.cond(is_jpeg, lambda: _decode_jpeg_scaled(encoded, image_size), full)
    image.set_shape([None, None, 3])
    return image


def _tensorflow_decode(encoded: bytes, name: str, ratio: int) -> np.ndarray:
    import tensorflow as tf

    try:  # eager ops: faster per image than a tf.function call
        if ratio == 1:
            return decode_image_tensor(tf.constant(encoded)).numpy()
        return tf.io.decode_jpeg(encoded, channels=3, ratio=ratio).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as err:
        reason = str(err.message).splitlines()[0] if err.message else type(err).__name__
        raise ImageDecodeError(name, f"corrupt or truncated image (TensorFlow: {reason})") from None


def decode_pixels_sized(
    data: bytes,
    name: str = "<bytes>",
    image_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_pixels` and the image's full ``(width, height)`` (a JPEG decoded at a
    reduced scale is smaller than the image its boxes are drawn on)."""
    image = _open_checked(data, name, max_pixels)
    if _plain(image, data, name):
        ratio = jpeg_ratio(*image.size, image_size) if image.format == "JPEG" else 1
        return _tensorflow_decode(data, name, ratio), image.size
    canonical = canonical_image(data, name, max_pixels, verify=False)
    pixels = _tensorflow_decode(canonical.encoded, name, ratio=1)
    return pixels, (canonical.width, canonical.height)


def decode_pixels(
    data: bytes,
    name: str = "<bytes>",
    image_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Validate and decode encoded image bytes to the uint8 pixels a model of ``image_size``
    sees: the same pixels as :func:`decode_image_tensor` of the canonical bytes in a graph.

    A plain JPEG is validated by decoding it (at the reduced scale of :func:`jpeg_ratio`), so a
    huge one never costs its full size. Raises :class:`ImageDecodeError`.
    """
    return decode_pixels_sized(data, name, image_size, max_pixels)[0]


def read_pixels(
    path: str | Path,
    image_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> np.ndarray:
    """:func:`decode_pixels` of one file (a regular file, bounded); errors name the file."""
    return read_pixels_sized(path, image_size, max_pixels, max_bytes)[0]


def read_pixels_sized(
    path: str | Path,
    image_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_pixels_sized` of one file (a regular file, bounded)."""
    try:
        data = read_regular_file(path, max_bytes)
    except FileError as err:
        raise ImageDecodeError(err.path, err.reason) from None
    return decode_pixels_sized(data, str(path), image_size, max_pixels)


def load_image_array(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The canonical RGB uint8 array of one file, decoded exactly as the model will see it."""
    return read_pixels(path, None, max_pixels)
