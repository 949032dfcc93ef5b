"""What the command line prints: results on stdout, warnings and errors on stderr."""

from __future__ import annotations

import typer


def warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def error(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 image``, ``2 images``."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


class Counter:
    """Progress of a stream of unknown length: a tqdm bar on a terminal, else a line every
    ``every`` items on stderr (so a log file gets periodic progress, not a redrawn bar)."""

    def __init__(self, description: str, unit: str = "image", every: int = 1000) -> None:
        import sys

        from tqdm import tqdm

        self.count, self.every, self.unit, self.description = 0, every, unit, description
        self.bar = tqdm(desc=description, unit=unit, leave=False) if sys.stderr.isatty() else None

    def update(self, count: int = 1) -> None:
        self.count += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.count % self.every == 0:
            typer.echo(f"{self.description}: {plural(self.count, self.unit)}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
