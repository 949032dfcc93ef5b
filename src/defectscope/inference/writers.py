"""Write prediction results as CSV or JSON, atomically."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from defectscope.atomic_io import atomic_write_text
from defectscope.inference.classifier import Prediction

CSV_COLUMNS = ("path", "label", "confidence", "top_k", "error")


def write_predictions(predictions: Sequence[Prediction], path: str | Path) -> Path:
    """``.json``: a list of ``to_dict()``; ``.csv``: top-k as ``label:probability;...``."""
    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps([p.to_dict() for p in predictions], indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for p in predictions:
            top = ";".join(f"{name}:{prob:.6f}" for name, prob in p.top_k)
            confidence = f"{p.confidence:.6f}" if p.ok else ""
            writer.writerow([p.path, p.label, confidence, top, p.error])
        text = buffer.getvalue()
    atomic_write_text(path, text)
    return path
