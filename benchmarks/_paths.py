"""Where the benchmarks find the real data and weights (the tests' environment variables)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT_DATA = Path(os.environ.get("DEFECTSCOPE_NEU_ROOT", SHARED / "data" / "NEU-DET"))
DEFAULT_WEIGHTS = Path(
    os.environ.get(
        "DEFECTSCOPE_XCEPTION_WEIGHTS", SHARED / "weights" / "xception_imagenet_notop.weights.h5"
    )
)


def add_data_arguments(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """``--data`` (dataset root or TFRecord folder) and ``--weights``, with those defaults."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset or TFRecords")
    if weights:
        parser.add_argument(
            "--weights", type=Path, default=DEFAULT_WEIGHTS, help="Xception weights"
        )
