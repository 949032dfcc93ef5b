"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOption = Annotated[
    Path, typer.Option("--model", help="Run folder, .keras file or export folder.")
]
DataOption = Annotated[Path, typer.Option("--data", help="Dataset root or TFRecord folder.")]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Images per prediction batch.")
]
TtaOption = Annotated[
    bool,
    typer.Option(
        "--tta",
        help="Detector: average its outputs over the image and its horizontal and vertical "
        "mirror images (test-time flips): better boxes at 3x the time.",
    ),
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Write into --out even when it holds files this command did not make."
    ),
]
