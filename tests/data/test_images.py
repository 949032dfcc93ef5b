"""Every image kind decodes to the same canonical RGB uint8 array; bad files are refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from defectscope.data.images import (
    ImageDecodeError,
    canonical_image,
    decode_image_tensor,
    load_image_array,
)
from tests.helpers import png_claiming_size

GREY = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # 48 x 64 ramp


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return decode_image_tensor(canonical_image(data).encoded).numpy()


def expected_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


@pytest.mark.parametrize(
    ("mode_image", "fmt"),
    [
        (lambda: Image.fromarray(GREY), "PNG"),
        (lambda: Image.fromarray(GREY).convert("RGB"), "PNG"),
        (lambda: Image.fromarray(GREY).convert("RGBA"), "PNG"),
        (lambda: Image.fromarray(GREY).convert("LA"), "PNG"),
        (lambda: Image.fromarray(GREY), "BMP"),
        (lambda: Image.fromarray(GREY).convert("RGB"), "BMP"),
        (lambda: Image.fromarray(GREY), "GIF"),
        (lambda: Image.fromarray(GREY), "TIFF"),
        (lambda: Image.fromarray(GREY).convert("RGB"), "TIFF"),
    ],
    ids=["png-L", "png-RGB", "png-RGBA", "png-LA", "bmp-L", "bmp-RGB", "gif", "tiff-L", "tiff-RGB"],
)
def test_lossless_formats_and_modes_decode_to_the_same_rgb(mode_image, fmt: str) -> None:
    array = decoded(encode(mode_image(), fmt))
    assert array.dtype == np.uint8
    assert array.shape == (48, 64, 3)
    np.testing.assert_array_equal(array, expected_rgb(GREY))


def test_sixteen_bit_grey_png_is_scaled_to_eight_bits() -> None:
    wide = GREY.astype(np.uint16) * 257  # 0..65535 ramp
    array = decoded(encode(Image.fromarray(wide), "PNG"))
    np.testing.assert_array_equal(array, expected_rgb(GREY))


def test_palette_with_transparency_and_cmyk_jpeg_match_pillow_rgb() -> None:
    palette = Image.fromarray(GREY).convert("P")
    palette.info["transparency"] = 0
    np.testing.assert_array_equal(
        decoded(encode(palette, "PNG")), np.asarray(palette.convert("RGBA").convert("RGB"))
    )
    cmyk_bytes = encode(Image.fromarray(GREY).convert("RGB").convert("CMYK"), "JPEG", quality=95)
    canonical = canonical_image(cmyk_bytes)
    assert (canonical.source_mode, canonical.format) == ("CMYK", "png")
    expected = np.asarray(Image.open(io.BytesIO(cmyk_bytes)).convert("RGB"))
    np.testing.assert_array_equal(decoded(cmyk_bytes), expected)


def test_plain_jpeg_passes_through_untouched_and_matches_pillow() -> None:
    data = encode(Image.fromarray(GREY).convert("RGB"), "JPEG", quality=90)
    canonical = canonical_image(data)
    assert canonical.encoded is data
    assert (canonical.format, canonical.width, canonical.height) == ("jpeg", 64, 48)
    pillow = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(decoded(data).astype(int) - pillow).max() <= 1


def test_gif_uses_the_first_frame() -> None:
    first, second = Image.fromarray(GREY), Image.fromarray(255 - GREY)
    data = encode(first, "GIF", save_all=True, append_images=[second])
    np.testing.assert_array_equal(decoded(data), expected_rgb(GREY))


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(GREY).convert("RGB")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", quality=95, exif=exif.tobytes())
    assert decoded(data).shape == (64, 48, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"this is a text file, not an image", "not a readable image"),
        (png_claiming_size(100_000, 100_000), "decompression bomb"),
    ],
    ids=["empty", "text", "bomb"],
)
def test_bad_bytes_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason) as caught:
        canonical_image(data, name="sample.png")
    assert caught.value.path == "sample.png"


def test_truncated_jpeg_is_refused() -> None:
    data = encode(Image.fromarray(GREY).convert("RGB"), "JPEG")
    with pytest.raises(ImageDecodeError, match=r"(?i)truncated"):
        canonical_image(data[: len(data) // 2], name="cut.jpg")


def test_pixel_limit_is_configurable(tmp_path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(encode(Image.fromarray(GREY), "PNG"))
    assert load_image_array(path).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 1000"):
        load_image_array(path, max_pixels=1000)


def test_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(ImageDecodeError, match=r"absent\.jpg: cannot read"):
        load_image_array(tmp_path / "absent.jpg")
