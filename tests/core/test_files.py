"""Bounded reads: only regular files, within size limits and roots; output folders kept safe."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from defectscope.core.errors import FileError, RunFolderError
from defectscope.core.files import (
    UnsafeFileError,
    check_regular_file,
    prepare_output_folder,
    read_regular_file,
)


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"12345")
    assert read_regular_file(path, 5) == b"12345"
    assert check_regular_file(path, 5) == 5


def test_too_large_and_sparse_files_are_refused_before_reading(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.png"
    with open(sparse, "wb") as handle:
        handle.truncate(64 * 1024**3)  # 64 GiB of nothing, as a user's disk may hold
    with pytest.raises(UnsafeFileError, match="68719476736 bytes is more than the limit"):
        read_regular_file(sparse, 1024)


def test_fifos_devices_sockets_and_folders_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "image.jpg"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFileError, match="FIFO"):
        read_regular_file(fifo, 1024)  # would block forever if opened
    device = tmp_path / "zero.xml"
    device.symlink_to("/dev/zero")
    with pytest.raises(UnsafeFileError, match="character device"):
        read_regular_file(device, 1024)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "s.png"))
        with pytest.raises(UnsafeFileError, match="socket"):
            read_regular_file(tmp_path / "s.png", 1024)
    with pytest.raises(UnsafeFileError, match="folder"):
        read_regular_file(tmp_path, 1024)


def test_symlink_loops_and_escapes_are_refused(tmp_path: Path) -> None:
    (tmp_path / "self.jpg").symlink_to(tmp_path / "self.jpg")
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    for name in ("self.jpg", "a.jpg"):
        with pytest.raises(UnsafeFileError, match="symlink loop"):
            read_regular_file(tmp_path / name, 1024)
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.xml"
    outside.write_text("<annotation/>")
    (root / "a.xml").symlink_to(outside)
    assert read_regular_file(root / "a.xml", 1024) == b"<annotation/>"  # no root: allowed
    with pytest.raises(UnsafeFileError, match="leaves the folder"):
        read_regular_file(root / "a.xml", 1024, root=root)
    with pytest.raises(FileError, match="No such file"):
        read_regular_file(tmp_path / "missing.jpg", 1024)


def test_output_folders_keep_the_users_files(tmp_path: Path) -> None:
    fresh = prepare_output_folder(tmp_path / "new" / "out", "evaluation files")
    assert fresh.is_dir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_text("years of work")
    with pytest.raises(RunFolderError, match=r"thesis\.docx.*--overwrite"):
        prepare_output_folder(mine, "evaluation files", owned=lambda p: p.name == "report.md")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "report.md").write_text("old report")
    prepare_output_folder(tmp_path / "ours", "evaluation files", lambda p: p.name == "report.md")
    prepare_output_folder(mine, "evaluation files", overwrite=True)
    assert (mine / "thesis.docx").read_text() == "years of work"  # accepted, nothing removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        prepare_output_folder(tmp_path / "file", "evaluation files")
