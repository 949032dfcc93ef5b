"""The application: every option explained, --version, the error boundary, fast start."""

from __future__ import annotations

import subprocess
import sys
import time

import typer
from typer.testing import CliRunner

from defectscope.cli.main import app
from defectscope.core.version import __version__

runner = CliRunner()


def test_every_option_and_argument_has_help_text() -> None:
    group = typer.main.get_command(app)
    missing = [
        f"{name} {param.name}"
        for name, command in group.commands.items()
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert missing == []


def test_version_option() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"defectscope {__version__}"


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path) -> None:
    missing = runner.invoke(app, ["predict", "--model", str(tmp_path / "nope"), "a.jpg"])
    assert missing.exit_code == 2
    assert missing.output.count("\n") == 1 and missing.output.startswith("error: ")
    code = (
        "import sys; import defectscope.cli.main as m\n"
        "def bug(): raise RuntimeError('a bug')\n"
        "m.app.command('bug')(bug)\n"
        "sys.argv = ['defectscope', 'bug']; m.main()\n"
    )
    crashed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert crashed.returncode == 70
    assert "Traceback" in crashed.stderr and "RuntimeError: a bug" in crashed.stderr
    assert "This is a bug in defectscope" in crashed.stderr


def test_help_and_argument_errors_come_before_tensorflow(tmp_path) -> None:
    started = time.perf_counter()
    for args in (
        ["--help"],
        ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")],
        ["evaluate", "--model", str(tmp_path / "nope"), "--data", str(tmp_path)],
        ["predict", "--model", str(tmp_path / "nope"), "x.jpg"],
    ):
        completed = subprocess.run(
            [sys.executable, "-m", "defectscope", *args], capture_output=True, text=True
        )
        assert completed.returncode in (0, 2), completed.stderr
        assert "I0000" not in completed.stderr  # TensorFlow never started
    assert (time.perf_counter() - started) / 4 < 2.0  # each well under 2 s
    assert not (tmp_path / "run").exists()  # a failed start leaves no run folder
