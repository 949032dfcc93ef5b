"""Bounded reads of regular files, and output folders that never lose a user's files.

Every file defectscope reads from a dataset, a path list or a folder walk goes through
:func:`read_regular_file`: it refuses FIFOs, devices, sockets and folders before opening (so
nothing can block or read without end), symlink loops, symlinks that leave a given root, and
files over a size limit; it never reads more than the limit.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from defectscope.core.errors import ConfigError, FileError, RunFolderError

MIB = 1024 * 1024
DEFAULT_MAX_IMAGE_BYTES = 256 * MIB  # a 64-megapixel uncompressed BMP is 192 MiB
DEFAULT_MAX_XML_BYTES = 1 * MIB  # a VOC file is a few hundred bytes


class UnsafeFileError(FileError):
    """A path that is not a regular file of bounded size (FIFO, device, loop, too large...)."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def resolve_inside(path: Path, root: Path | None) -> Path:
    """``path`` with its symlinks resolved; refused when it loops or leaves ``root``."""
    try:
        resolved = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        raise UnsafeFileError(path, "symlink loop") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafeFileError(path, "symlink loop") from None
        raise FileError(path, f"cannot read ({err.strerror or err})") from None
    if root is not None and not resolved.is_relative_to(root.resolve()):
        raise UnsafeFileError(path, f"symlink to {resolved} leaves the folder {root}")
    return resolved


def check_regular_file(path: str | Path, max_bytes: int, root: Path | None = None) -> int:
    """The size of ``path`` after checking it is a regular file within limits (no open)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafeFileError(path, "symlink loop") from None
        raise FileError(path, f"cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFileError(path, f"{_kind(info.st_mode)}, not a regular file; not read")
    if info.st_size > max_bytes:
        raise UnsafeFileError(
            path, f"{info.st_size} bytes is more than the limit of {max_bytes} bytes"
        )
    resolve_inside(path, root)
    return info.st_size


def read_regular_file(path: str | Path, max_bytes: int, root: Path | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see the module docstring).

    Raises:
        UnsafeFileError: not a regular file, a symlink loop or escape, or too large.
        FileError: the file cannot be read.
    """
    path = Path(path)
    check_regular_file(path, max_bytes, root)
    try:  # O_NONBLOCK: a FIFO swapped in after the check cannot block the open
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise FileError(path, f"cannot read ({err.strerror or err})") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UnsafeFileError(path, "changed into something else than a regular file")
        try:
            data = handle.read(max_bytes + 1)
        except OSError as err:
            raise FileError(path, f"cannot read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise UnsafeFileError(path, f"grew past the limit of {max_bytes} bytes while read")
    return data


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def check_outside(out: Path, data: Path, out_name: str, data_name: str) -> None:
    """Refuse an output folder that is, or lies inside, an input folder (its files would mix
    with the user's data, and a later scan of the data would find them)."""
    try:
        inside = out.resolve().is_relative_to(data.resolve())
    except (OSError, RuntimeError):
        return
    if inside and data.is_dir():
        raise ConfigError(f"{out_name} {str(out)!r} lies inside {data_name} {str(data)!r}")


def prepare_output_folder(
    folder: str | Path,
    what: str,
    owned: Callable[[Path], bool] = lambda path: False,
    overwrite: bool = False,
) -> Path:
    """Create ``folder`` for a command's outputs, or accept it when it is empty or holds only
    files the command itself writes (``owned``); anything else is refused before any work,
    so no file of the user's is replaced. ``overwrite`` accepts any folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder}: exists and is not a folder; choose another --out")
    if folder.is_dir() and not overwrite:
        foreign = sorted(p.name for p in folder.iterdir() if not owned(p))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise RunFolderError(
                f"{folder}: holds files that are not {what} ({shown}); they could be replaced. "
                "Choose another --out, or pass --overwrite"
            )
    folder.mkdir(parents=True, exist_ok=True)
    return folder
