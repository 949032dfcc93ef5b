"""The errors defectscope reports to a user: each names the bad value and what to do.

Everything a user can cause (a missing file, a bad option, an unusable model) raises a
:class:`DefectscopeError`; the command line catches that one type and prints its message in one
line. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class DefectscopeError(Exception):
    """Base of every error caused by the user's input, files or environment."""

    exit_code = 2


class ConfigError(DefectscopeError, ValueError):
    """A bad argument or configuration value; the message repeats the value."""


class FileError(DefectscopeError, ValueError):
    """A file that cannot be used. ``path`` and ``reason`` are kept apart for reports."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class RunFolderError(DefectscopeError, ValueError):
    """A run or output folder that cannot be created, written or resumed."""


class NothingDoneError(DefectscopeError):
    """A command whose inputs were read but gave nothing usable (exit code 1)."""

    exit_code = 1


class TrainingDivergedError(DefectscopeError):
    """A training loss that became NaN or infinite: the weights diverged, the run stopped."""

    exit_code = 1


class ExportError(DefectscopeError):
    """An export that could not be made or failed its parity check."""
