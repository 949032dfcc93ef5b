"""A small, seeded, NEU-like dataset drawn procedurally: six defect classes with VOC boxes.

Used by ``defectscope demo``, the notebook and the tests, so that everything runs offline.
The drawings imitate the NEU classes (thin crack networks, dark elongated inclusions, blotchy
patches, pits, flaky scale, long scratches) on a grey steel-like texture.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from defectscope.core.errors import ConfigError
from defectscope.data.neu import NEU_CLASSES

Box = tuple[int, int, int, int]
Drawer = Callable[[ImageDraw.ImageDraw, np.random.Generator, int, int], list[Box]]


def _region(rng: np.random.Generator, size: int, low: float, high: float) -> Box:
    w, h = (int(rng.uniform(low, high) * size) for _ in range(2))
    x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    return x, y, x + w, y + h


def _blob(rng: np.random.Generator, cx: float, cy: float, radius: float, points: int = 12):
    angles = np.sort(rng.uniform(0, 2 * math.pi, points))
    radii = radius * rng.uniform(0.6, 1.3, points)
    return [
        (cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)
    ]


def _bounds(points: list[tuple[float, float]], size: int, pad: int = 1) -> Box:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    clamp = lambda v: int(min(max(v, 0), size - 1))  # noqa: E731
    return clamp(min(xs) - pad), clamp(min(ys) - pad), clamp(max(xs) + pad), clamp(max(ys) + pad)


def _crazing(draw, rng, size, base) -> list[Box]:
    box = _region(rng, size, 0.4, 0.95)
    for _ in range(int(rng.integers(40, 80))):
        x, y = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
        angle, length = rng.uniform(0, math.pi), rng.uniform(5, 18)
        end = (x + length * math.cos(angle), y + length * math.sin(angle))
        draw.line([(x, y), end], fill=int(base - rng.uniform(25, 45)), width=1)
    return [box]


def _inclusion(draw, rng, size, base) -> list[Box]:
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
        angle, half_len, half_w = rng.uniform(0, math.pi), rng.uniform(15, 40), rng.uniform(3, 7)
        points = [
            (
                cx
                + half_len * math.cos(t) * math.cos(angle)
                - half_w * math.sin(t) * math.sin(angle),
                cy
                + half_len * math.cos(t) * math.sin(angle)
                + half_w * math.sin(t) * math.cos(angle),
            )
            for t in np.linspace(0, 2 * math.pi, 20, endpoint=False)
        ]
        draw.polygon(points, fill=int(base - rng.uniform(50, 80)))
        boxes.append(_bounds(points, size))
    return boxes


def _patches(draw, rng, size, base) -> list[Box]:
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        points = _blob(rng, cx, cy, rng.uniform(18, 40), points=16)
        shade = base + rng.choice([-1, 1]) * rng.uniform(45, 70)
        draw.polygon(points, fill=int(np.clip(shade, 0, 255)))
        boxes.append(_bounds(points, size))
    return boxes


def _pitted_surface(draw, rng, size, base) -> list[Box]:
    box = _region(rng, size, 0.3, 0.7)
    for _ in range(int(rng.integers(25, 60))):
        x, y, r = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3]), rng.uniform(1, 3)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=int(base - rng.uniform(40, 70)))
    return [box]


def _rolled_in_scale(draw, rng, size, base) -> list[Box]:
    box = _region(rng, size, 0.35, 0.8)
    for _ in range(int(rng.integers(15, 35))):
        cx, cy = rng.uniform(box[0] + 4, box[2] - 4), rng.uniform(box[1] + 4, box[3] - 4)
        shade = base + rng.choice([-1, 1]) * rng.uniform(30, 55)
        draw.polygon(
            _blob(rng, cx, cy, rng.uniform(3, 7), points=7), fill=int(np.clip(shade, 0, 255))
        )
    return [box]


def _scratches(draw, rng, size, base) -> list[Box]:
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(0.1, 0.9, 2) * size
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.4, 0.9) * size
        x1 = float(np.clip(x0 + length * math.cos(angle), 0, size - 1))
        y1 = float(np.clip(y0 + length * math.sin(angle), 0, size - 1))
        draw.line(
            [(x0, y0), (x1, y1)], fill=int(min(base + 60, 255)), width=int(rng.integers(1, 4))
        )
        boxes.append(_bounds([(x0, y0), (x1, y1)], size, pad=3))
    return boxes


def _ok(draw, rng, size, base) -> list[Box]:
    return []  # plain steel: no defect, no box


OK_CLASS = "ok"
DRAWERS: dict[str, Drawer] = dict(
    zip(
        (*NEU_CLASSES, OK_CLASS),
        (_crazing, _inclusion, _patches, _pitted_surface, _rolled_in_scale, _scratches, _ok),
        strict=True,
    )
)


def _texture(rng: np.random.Generator, size: int, base: float) -> Image.Image:
    coarse = rng.normal(0, 10, (8, 8))
    smooth = np.asarray(
        Image.fromarray(coarse.astype(np.float32)).resize((size, size), Image.BICUBIC)
    )
    pixels = base + smooth + rng.normal(0, 6, (size, size))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_sample(class_name: str, rng: np.random.Generator, size: int = 200):
    """One grey image of ``class_name`` and its defect boxes (VOC pixel corners)."""
    if class_name not in DRAWERS:
        raise ConfigError(f"unknown synthetic class {class_name!r}; choose from {list(DRAWERS)}")
    base = float(rng.uniform(95, 165))
    image = _texture(rng, size, base)
    boxes = DRAWERS[class_name](ImageDraw.Draw(image), rng, size, base)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    return image, boxes


def voc_xml(filename: str, width: int, height: int, objects: list[tuple[str, Box]]) -> str:
    """A minimal Pascal VOC annotation in the NEU style."""
    parts = [
        "<annotation>",
        f"\t<filename>{escape(filename)}</filename>",
        f"\t<size><width>{width}</width><height>{height}</height><depth>1</depth></size>",
    ]
    for name, (xmin, ymin, xmax, ymax) in objects:
        parts.append(
            f"\t<object><name>{escape(name)}</name><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
            f"<ymax>{ymax}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def synthesize_dataset(
    root: str | Path,
    train_per_class: int = 30,
    val_per_class: int = 10,
    image_size: int = 200,
    seed: int = 0,
    classes: tuple[str, ...] = NEU_CLASSES,
) -> Path:
    """Write a Kaggle-layout NEU-like dataset under ``root`` and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("validation", val_per_class)):
        (root / split / "annotations").mkdir(parents=True, exist_ok=True)
        for class_name in classes:
            folder = root / split / "images" / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                stem = f"{class_name}_{split}_{i + 1}"
                image, boxes = draw_sample(class_name, rng, image_size)
                image.convert("RGB").save(folder / f"{stem}.jpg", quality=92)
                xml = voc_xml(
                    f"{stem}.jpg", image_size, image_size, [(class_name, b) for b in boxes]
                )
                (root / split / "annotations" / f"{stem}.xml").write_text(xml)
    return root


def add_quirks(root: str | Path) -> list[Path]:
    """Plant the real-world oddities ``defectscope`` must report (demo and tests use it)."""
    root = Path(root)
    images = root / "train" / "images"
    first_class = sorted(p.name for p in images.iterdir())[0]
    planted = [
        images / first_class / ".DS_Store",
        images / first_class / "notes.txt",
        images / first_class / "truncated.jpg",
        images / first_class / "empty.png",
        root / "train" / "annotations" / "orphan.xml",
    ]
    planted[0].write_bytes(b"\0\0\0\1Bud1")
    planted[1].write_text("operator notes, not an image\n")
    good = next((images / first_class).glob("*.jpg")).read_bytes()
    planted[2].write_bytes(good[: len(good) // 2])
    planted[3].write_bytes(b"")
    planted[4].write_text(voc_xml("orphan.jpg", 200, 200, []))
    return planted
