"""Errors about one input file: the message always names the file and the reason."""

from __future__ import annotations

from pathlib import Path


class FileError(ValueError):
    """A file that cannot be used. ``path`` and ``reason`` are kept apart for reports."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason
