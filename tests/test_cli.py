"""The command line, in-process (typer's runner) and once as an installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from defectscope import __version__
from defectscope.cli import app
from defectscope.data.synthetic import add_quirks

runner = CliRunner()


def test_convert_with_broken_files_warns_and_exits_zero(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    add_quirks(synthetic_copy)
    out = tmp_path / "records"
    result = runner.invoke(app, ["convert", "--data", str(synthetic_copy), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "train: 24 images" in result.output
    assert "skipped" in result.output and "truncated.jpg" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["skipped"]) == 5


def test_convert_without_a_layout_fails_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no dataset layout recognised" in result.output


def test_inspect_writes_grid_and_json(synthetic_root: Path, tmp_path: Path) -> None:
    grid, report = tmp_path / "grid.png", tmp_path / "report.json"
    args = ["inspect", str(synthetic_root), "--grid", str(grid), "--json", str(report)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "crazing" in result.output and "total" in result.output
    assert grid.stat().st_size > 1000
    assert json.loads(report.read_text())["counts"]["validation"]["scratches"] == 2


def test_inspect_of_an_interrupted_conversion_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"")
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert "interrupted" in result.output


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--per-class", "4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "tfrecords" / "manifest.json").is_file()
    assert (tmp_path / "demo" / "samples.png").is_file()
    assert "unreadable_image (error): 2" in result.output


def test_console_script_is_installed() -> None:
    executable = Path(sys.executable).parent / "defectscope"
    assert executable.is_file(), f"no console script beside {sys.executable}"
    completed = subprocess.run([executable, "version"], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == __version__
