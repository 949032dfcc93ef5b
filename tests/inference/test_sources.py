"""Lazy path streams: folder walks in sorted order, lists of paths, and shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectscope.inference.sources import Shard, read_path_list, stream_sources, walk_images


def _tree(root: Path) -> list[Path]:
    names = ["b.jpg", "a/z.png", "a/c/d.jpg", "a b/é.jpg", "a/.hidden.jpg", "a/notes.txt", "aa.bmp"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return [root / n for n in names if not n.endswith((".txt",)) and "/." not in n]


def test_walk_matches_sorted_rglob_without_hidden_or_non_images(tmp_path: Path) -> None:
    expected = sorted(_tree(tmp_path))
    assert list(walk_images(tmp_path)) == expected


def test_path_list_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    listing = tmp_path / "paths.txt"
    listing.write_text("# archive of line 3\n/a/1.jpg\n\n  /a/2 with space.jpg  \n")
    assert list(read_path_list(listing)) == ["/a/1.jpg", "/a/2 with space.jpg"]


@pytest.mark.parametrize("text", ["2/2", "-1/3", "1", "a/b", "0/0"])
def test_bad_shard_repeats_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=text.replace("/", ".")):
        Shard.parse(text)


def test_shards_split_without_overlap_or_loss(tmp_path: Path) -> None:
    _tree(tmp_path)
    paths = [f"/archive/line{i % 7}/img_{i:05d}.jpg" for i in range(3000)]
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    parts = [
        [str(p) for p in stream_sources(list_files=[listing], shard=Shard(i, 3))] for i in range(3)
    ]
    assert sorted(p for part in parts for p in part) == sorted(paths)
    assert all(800 < len(part) < 1200 for part in parts)  # a hash, so roughly even
    assert [p for p in paths if Shard(1, 3).holds(p)] == parts[1]  # input order kept


def test_stream_keeps_misses_as_error_items(tmp_path: Path) -> None:
    images = _tree(tmp_path / "data")
    items = list(stream_sources([tmp_path / "data", tmp_path / "nowhere"], []))
    assert items[:-1] == sorted(images)
    assert items[-1] == (str(tmp_path / "nowhere"), "no such file or folder")


def test_stream_is_lazy(tmp_path: Path) -> None:
    listing = tmp_path / "paths.txt"
    listing.write_text("first.jpg\n")
    stream = stream_sources(list_files=[listing])
    listing.write_text("first.jpg\nsecond.jpg\n")  # read only when the stream is drawn
    assert [str(p) for p in stream] == ["first.jpg", "second.jpg"]
