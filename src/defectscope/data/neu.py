"""Facts about the NEU surface defect database (NEU-DET), the project's first dataset."""

from __future__ import annotations

NEU_CLASSES = (
    "crazing",
    "inclusion",
    "patches",
    "pitted_surface",
    "rolled-in_scale",
    "scratches",
)
