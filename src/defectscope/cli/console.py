"""What the command line prints: results on stdout, warnings and errors on stderr."""

from __future__ import annotations

import typer


def warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def error(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
