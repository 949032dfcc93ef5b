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

from defectscope.core.errors import ConfigError, FileError
from defectscope.data.images import is_image_path

SourceItem = Path | tuple[str, str]  # an image path, or (source, error) for a source that failed
MAX_PATH_LINE = 4096  # characters in one line of a list of paths


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


def _is_dir(path: str | os.DirEntry) -> bool:
    try:
        return path.is_dir() if isinstance(path, os.DirEntry) else os.path.isdir(path)
    except OSError:  # a symlink loop: not a folder; reading it reports the loop
        return False


def walk_images(folder: Path, _walked: set | None = None) -> Iterator[SourceItem]:
    """Image files under ``folder`` in sorted-path order, one directory listing at a time.

    Symlinked folders are followed, but no folder is walked twice: a folder reached again
    (a symlink loop) gives one error item instead of its images again. Entries named like
    images are yielded whatever they are (FIFO, device, broken link): reading them reports it.
    """
    walked = set() if _walked is None else _walked
    try:
        info = os.stat(folder)
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as err:
        yield (str(folder), f"cannot list the folder ({err.strerror or err})")
        return
    if (info.st_dev, info.st_ino) in walked:
        yield (str(folder), "a folder already walked (symlink loop); skipped")
        return
    walked.add((info.st_dev, info.st_ino))
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if _is_dir(entry):
            yield from walk_images(Path(entry.path), walked)
        elif is_image_path(entry.name):
            yield Path(entry.path)


def _glob_images(pattern: str) -> Iterator[Path]:
    """Files matching ``pattern`` (``**`` recursive), each file once however it is reached."""
    seen: set = set()
    for match in sorted(glob.glob(pattern, recursive=True)):
        if _is_dir(match):
            continue
        try:
            info = os.stat(match)
            key = (info.st_dev, info.st_ino)
        except OSError:
            key = match  # a loop or broken link: reading it reports why
        if key not in seen:
            seen.add(key)
            yield Path(match)


def read_path_list(list_file: str | Path) -> Iterator[str]:
    """Paths of a text file, one per line (blank lines and ``#`` comments skipped); ``-``: stdin.

    A pipe works (``--paths-from <(find ...)``); a line longer than :data:`MAX_PATH_LINE`
    characters (a binary file, ``/dev/zero``) ends the list with an error instead of filling
    the memory.
    """
    try:
        handle = sys.stdin if str(list_file) == "-" else open(list_file, encoding="utf-8")  # noqa: SIM115
    except OSError as err:
        raise FileError(list_file, f"cannot read the list ({err.strerror or err})") from None
    try:
        while line := handle.readline(MAX_PATH_LINE + 1):  # some stdin wrappers end in EOFError
            if len(line) > MAX_PATH_LINE and not line.endswith("\n"):  # when iterated
                raise FileError(list_file, f"a line longer than {MAX_PATH_LINE} characters")
            text = line.strip()
            if text and not text.startswith("#"):
                yield text
    except UnicodeDecodeError as err:
        raise FileError(list_file, f"not a UTF-8 text list of paths ({err.reason})") from None
    finally:
        if handle is not sys.stdin:
            handle.close()


def expand_sources(sources: Iterable[str | Path]) -> Iterator[SourceItem]:
    """Image files of files, folders (recursive) and globs; ``(source, error)`` for a miss."""
    for source in sources:
        text = str(source)
        if _is_dir(text):
            found = False
            for item in walk_images(Path(text)):
                found = True
                yield item
            if not found:
                yield (text, "folder holds no image file")
        elif os.path.lexists(text):
            yield Path(text)  # a file, or something that reading will report (FIFO, loop)
        elif any(ch in text for ch in "*?["):
            matched = False
            for match in _glob_images(text):
                matched = True
                yield match
            if not matched:
                yield (text, "pattern matches no file")
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
