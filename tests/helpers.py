"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import csv
import io
import signal
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

from defectscope.training.config import TrainConfig, resolve_config

# A run that takes seconds: random 71 px Xception, 2 head epochs, 4 fine-tuning epochs.
TINY_CONFIG_YAML = (
    "weights: none\nimage_size: 71\nbatch_size: 8\nhead: {epochs: 2, batch_size: 8}\n"
    "finetune: {epochs: 4, unfreeze_from: block14, patience: 0}\n"
)


def dense_voc_dataset(root: Path, boxes_in_one_image: int) -> Path:
    """A Pascal VOC dataset root: per split, one black 96 px image holding
    ``boxes_in_one_image`` small "spot" boxes and one holding a single box."""
    from defectscope.data.synthetic import voc_xml

    grid = [(8 * (i % 12), 8 * (i // 12), 8 * (i % 12) + 6, 8 * (i // 12) + 6) for i in range(144)]
    for split in ("train", "validation"):
        (root / split / "images" / "spot").mkdir(parents=True)
        (root / split / "annotations").mkdir(parents=True)
        for name, boxes in (("dense", grid[:boxes_in_one_image]), ("single", grid[:1])):
            Image.new("RGB", (96, 96)).save(root / split / "images" / "spot" / f"{name}.png")
            xml = voc_xml(f"{name}.png", 96, 96, [("spot", box) for box in boxes])
            (root / split / "annotations" / f"{name}.xml").write_text(xml)
    return root


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """A run that takes seconds: random 71 px Xception, 2 head epochs, 1 fine-tuning epoch."""
    values = {
        "data": str(data),
        "out": str(out),
        "weights": "none",
        "image_size": 71,
        "batch_size": 8,
        "head": {"epochs": 2, "batch_size": 8},
        "finetune": {"epochs": 1, "unfreeze_from": "block14", "patience": 0},
    }
    values.update(overrides)
    return resolve_config(**values)


def tiny_detector_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """A detector run that takes seconds: random 96 px encoder, one epoch of the heads."""
    values = {
        "data": str(data),
        "out": str(out),
        "task": "detect",
        "weights": "none",
        "image_size": 96,
        "detect": {"epochs": 1, "batch_size": 8, "confidence": 0.0},
    }
    values.update(overrides)
    return resolve_config(**values)


def cli_command(*args: str) -> list[str]:
    """``python -m defectscope ARGS`` with this interpreter."""
    return [sys.executable, "-m", "defectscope", *args]


def results_rows(run: Path, phase: str | None = None) -> list[dict[str, str]]:
    """Rows of a run's results.csv (of one phase)."""
    path = run / "results.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [r for r in csv.DictReader(handle) if phase is None or r["phase"] == phase]


# --- crafted image files ---


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(width: int = 16, height: int = 8, ihdr: bytes | None = None, extra=()) -> bytes:
    """A grey 8-bit PNG built chunk by chunk (``extra`` chunks go before the image data)."""
    rows = b"".join(b"\0" + bytes(range(width)) for _ in range(height))
    header = ihdr or png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    parts = [header, *extra, png_chunk(b"IDAT", zlib.compress(rows)), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(parts)


def pngs_pillow_accepts_and_tensorflow_refuses() -> dict[str, bytes]:
    """Bit rot and malformed chunks that Pillow decodes but TensorFlow refuses."""
    good = grey_png()
    start = good.index(b"IDAT") - 4
    crc_at = start + 8 + struct.unpack(">I", good[start : start + 4])[0]
    bad_crc = good[:crc_at] + bytes([good[crc_at] ^ 1]) + good[crc_at + 1 :]
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 8, 8, 0, 0, 0, 0))
    return {
        "bad_idat_crc": bad_crc,
        "unknown_critical_chunk": grey_png(extra=[png_chunk(b"ABCD", b"xx")]),
        "missing_iend": good[: -len(png_chunk(b"IEND", b""))],
        "two_ihdr": grey_png(extra=[header]),
    }


def jpeg_claiming_size(width: int, height: int) -> bytes:
    """A few hundred bytes of JPEG whose header claims ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, "JPEG", quality=50)
    data = bytearray(buffer.getvalue())
    start = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, start + 5, height, width)
    return bytes(data)


def png_claiming_size(width: int, height: int) -> bytes:
    """A small grey PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return grey_png(8, 8, ihdr=header)


@contextlib.contextmanager
def within(seconds: int):
    """Fail (instead of hanging the test run) when the block takes longer than ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def saved_detector(run: Path, name: str = "last"):
    """A run's saved ``weights/NAME.keras`` detector, loaded as Keras saved it."""
    import keras

    from defectscope.models.detector import register_detector_layers

    register_detector_layers()
    return keras.saving.load_model(run / "weights" / f"{name}.keras", compile=False)
