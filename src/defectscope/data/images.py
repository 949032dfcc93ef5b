"""Image decoding shared by conversion, training, evaluation and prediction.

Every image enters defectscope through :func:`canonical_image`: Pillow opens the bytes, refuses
anything that is not a readable image (or is too large), and returns bytes that TensorFlow decodes
to a 3-channel ``uint8`` array. Plain 8-bit grey or RGB JPEG/PNG files pass through untouched; every
other mode or format (CMYK, RGBA, palette, 16-bit, BMP, GIF, TIFF, EXIF-rotated) is converted once
and re-encoded losslessly as PNG. The graph side then decodes with :func:`decode_image_tensor` only,
so a TFRecord, an image folder and a single uploaded file give the model identical pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from defectscope.core.errors import FileError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000  # refuse decompression bombs; NEU images have 40,000 pixels
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


def _passes_through(data: bytes, source_format: str, source_mode: str) -> bool:
    """Whether TensorFlow decodes these bytes to the same 8-bit pixels as Pillow."""
    if (source_format, source_mode) not in _PASS_THROUGH:
        return False
    png_bit_depth = data[24] if len(data) > 24 else 0  # IHDR: width, height, then bit depth
    return source_format != "PNG" or png_bit_depth == 8


def canonical_image(
    data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> CanonicalImage:
    """Validate encoded image bytes fully and return bytes in the canonical form.

    Raises:
        ImageDecodeError: empty, corrupt, truncated, unknown or oversized images.
    """
    image = _open_checked(data, name, max_pixels)
    source_format, source_mode = image.format or "unknown", image.mode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()  # full decode: catches truncated and corrupt data
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation != 1:
                image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(name, f"corrupt or truncated image ({err})") from None
    width, height = image.size
    if _passes_through(data, source_format, source_mode) and orientation == 1:
        return CanonicalImage(
            encoded=data,
            format=source_format.lower(),
            width=width,
            height=height,
            source_format=source_format,
            source_mode=source_mode,
        )
    buffer = io.BytesIO()
    Image.fromarray(to_rgb_array(image)).save(buffer, format="PNG", compress_level=1)
    return CanonicalImage(
        encoded=buffer.getvalue(),
        format="png",
        width=width,
        height=height,
        source_format=source_format,
        source_mode=source_mode,
    )


def read_canonical_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> CanonicalImage:
    """Read and validate one image file; raises :class:`ImageDecodeError` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageDecodeError(path, f"cannot read ({err.strerror or err})") from None
    return canonical_image(data, name=str(path), max_pixels=max_pixels)


def decode_image_tensor(encoded):
    """Graph-side decode of canonical bytes to a ``(H, W, 3)`` uint8 tensor."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def load_image_array(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The canonical RGB uint8 array of one file, decoded exactly as the model will see it."""
    canonical = read_canonical_image(path, max_pixels=max_pixels)
    return decode_image_tensor(canonical.encoded).numpy()
