"""The ``defectscope`` application: its commands, ``--version`` and the one error boundary.

Errors a user can cause are :class:`~defectscope.core.errors.DefectscopeError`: printed as one
line naming the bad value. Anything else is a bug: its traceback is printed with a note on
where to report it.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import traceback

import typer
from typer.core import TyperGroup

from defectscope.cli import console
from defectscope.cli.data import convert, inspect
from defectscope.cli.demo import demo
from defectscope.cli.deploy import benchmark, export, serve
from defectscope.cli.evaluate import evaluate
from defectscope.cli.predict import predict
from defectscope.cli.train import train
from defectscope.core.errors import DefectscopeError
from defectscope.core.version import __version__

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
BUG_REPORT = (
    "This is a bug in defectscope {version} (Python {python}). Please report it with the "
    "traceback above and the command you ran in the project's issue tracker."
)


class ErrorBoundary(TyperGroup):
    """Every command's user errors end here: one line naming the bad value, its exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DefectscopeError as err:
            console.error(str(err))
            raise typer.Exit(err.exit_code) from None


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"defectscope {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=ErrorBoundary,
    help="Find surface defects in industrial images (NEU-DET first).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Find surface defects in industrial images (NEU-DET first)."""


for command in (convert, inspect, train, evaluate, predict, export, benchmark, serve, demo):
    app.command()(command)


@app.command()
def version() -> None:
    """Print the defectscope version."""
    typer.echo(__version__)


def main() -> None:
    """The console script: logging set up, and any exception that is not a user's error (a
    bug) printed with its traceback and where to report it."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # tf.distribute's per-op chatter
    try:
        app()
    except Exception:
        traceback.print_exc()
        console.error(BUG_REPORT.format(version=__version__, python=platform.python_version()))
        sys.exit(70)  # EX_SOFTWARE


if __name__ == "__main__":
    main()
