"""A seeded mutation fuzz test: every mutated image file is refused with a reason or decodes.

Hundreds of JPEG, PNG, BMP, GIF and TIFF files are damaged (bit flips, cut tails, inserted and
repeated bytes). Each must either be refused with :class:`ImageDecodeError` (a reason, never a
traceback) or, once accepted, decode in a tf.data graph at full size and at the reduced JPEG
scales, and through the eager path of prediction, to the same pixels.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from defectscope.data.images import (
    ImageDecodeError,
    canonical_image,
    decode_image_tensor,
    decode_pixels,
)

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF")
MUTANTS_PER_FORMAT = 80


def _seed_image(fmt: str, rng: np.random.Generator) -> bytes:
    size = (int(rng.integers(8, 80)), int(rng.integers(8, 80)))
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if fmt in ("GIF", "PNG") and rng.random() < 0.5:
        image = image.convert("L")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip a few bits
        for _ in range(int(rng.integers(1, 6))):
            position = int(rng.integers(0, len(data)))
            data[position] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # cut the tail
        del data[int(rng.integers(1, len(data))) :]
    elif kind == 2:  # insert random bytes
        position = int(rng.integers(0, len(data)))
        data[position:position] = (
            rng.integers(0, 256, int(rng.integers(1, 32))).astype(np.uint8).tobytes()
        )
    else:  # repeat a slice (a duplicated chunk or marker segment)
        start = int(rng.integers(0, len(data) - 1))
        end = min(len(data), start + int(rng.integers(1, 64)))
        data[end:end] = data[start:end]
    return bytes(data)


def mutants(seed: int = 0) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    files = []
    for fmt in FORMATS:
        for index in range(MUTANTS_PER_FORMAT):
            files.append((f"{fmt.lower()}-{index}", _mutate(_seed_image(fmt, rng), rng)))
    return files


@pytest.mark.slow
def test_mutated_images_are_refused_or_decode_everywhere() -> None:
    import tensorflow as tf

    accepted, refused, escaped = [], 0, []
    for name, data in mutants():
        try:
            canonical = canonical_image(data, name)
        except ImageDecodeError:
            refused += 1
            continue
        except Exception as err:
            escaped.append(f"{name}: {type(err).__name__}: {err}")
            continue
        accepted.append((name, data, canonical.encoded))
    assert not escaped, escaped
    assert refused > 50 and len(accepted) > 50  # the fuzz exercises both outcomes

    encoded = [e for _, _, e in accepted]
    for image_size in (None, 32):  # full size, and the JPEG-scaled decode of small inputs
        dataset = tf.data.Dataset.from_tensor_slices(encoded).map(
            lambda e, size=image_size: tf.shape(decode_image_tensor(e, size))
        )
        shapes = [s.numpy() for s in dataset]  # an undecodable file would raise here
        assert len(shapes) == len(accepted)
    for name, data, canonical_bytes in accepted:  # the prediction path agrees with the graph
        try:
            eager = decode_pixels(data, name, 32)
        except ImageDecodeError:
            continue  # refused with a reason: allowed
        graph = decode_image_tensor(tf.constant(canonical_bytes), 32).numpy()
        assert eager.shape == graph.shape and np.array_equal(eager, graph), name
