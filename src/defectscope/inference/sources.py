"""Lazy streams of image paths for prediction: files, folder walks, globs and lists of paths.

Nothing here builds the whole list: a folder is walked one directory at a time, in the same
order as ``sorted(folder.rglob("*"))``, and a list file is read line by line, so an archive of
millions of images costs memory for one directory listing, not for the archive.
"""

from __future__ import annotations

import glob
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from defectscope.core.errors import ConfigError
from defectscope.data.images import is_image_path

SourceItem = Path | tuple[str, str]  # an image path, or (source, error) for a source that failed


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count``: a path belongs to it when a stable hash of it says so."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard must be i/n with 0 <= i < n, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"``, e.g. ``"0/4"``."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ConfigError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
        return cls(index, count)

    def holds(self, path: str) -> bool:
        """Same answer on every machine and in every order: CRC-32 of the path as given."""
        return self.count == 1 or zlib.crc32(path.encode("utf-8")) % self.count == self.index


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder`` in sorted-path order, one directory listing at a time."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from walk_images(Path(entry.path))
        elif entry.is_file() and is_image_path(entry.name):
            yield Path(entry.path)


def read_path_list(list_file: str | Path) -> Iterator[str]:
    """Paths of a text file, one per line (blank lines and ``#`` comments skipped); ``-``: stdin."""
    handle = sys.stdin if str(list_file) == "-" else open(list_file, encoding="utf-8")  # noqa: SIM115
    try:
        for line in iter(handle.readline, ""):  # readline: iterating some stdin wrappers ends
            text = line.strip()  # in EOFError instead of StopIteration
            if text and not text.startswith("#"):
                yield text
    finally:
        if handle is not sys.stdin:
            handle.close()


def expand_sources(sources: Iterable[str | Path]) -> Iterator[SourceItem]:
    """Image files of files, folders (recursive) and globs; ``(source, error)`` for a miss."""
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_file():
            yield path
        elif path.is_dir():
            found = False
            for image in walk_images(path):
                found = True
                yield image
            if not found:
                yield (text, "folder holds no image file")
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                yield (text, "pattern matches no file")
            yield from matches
        else:
            yield (text, "no such file or folder")


def stream_sources(
    sources: Iterable[str | Path] = (),
    list_files: Iterable[str | Path] = (),
    shard: Shard = Shard(),
) -> Iterator[SourceItem]:
    """Sources then listed paths (a listed path is taken as is: a missing file gets an error row),
    keeping only the items of ``shard``."""

    def listed() -> Iterator[SourceItem]:
        for list_file in list_files:
            for text in read_path_list(list_file):
                yield Path(text)

    for items in (expand_sources(sources), listed()):
        for item in items:
            if shard.holds(str(item) if isinstance(item, Path) else item[0]):
                yield item
