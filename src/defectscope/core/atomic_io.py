"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A process killed mid-write leaves at most a hidden ``.<name>.tmp-<pid>`` file, never a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

TEMP_MARKER = ".tmp-"


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # the temporary keeps the suffix, for writers that insist on one (Keras' ".keras")
    temp = final.with_name(f".{final.name}{TEMP_MARKER}{os.getpid()}{final.suffix}")
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: object) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporaries left by killed writers in ``folder``; returns how many were removed."""
    removed = 0
    for temp in Path(folder).glob(f".*{TEMP_MARKER}*"):
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            removed += 1
    return removed
