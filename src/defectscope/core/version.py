"""The installed version, read from the package metadata (one source: pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed_version() -> str:
    """defectscope's version, or ``0+unknown`` when it runs from a source tree not installed."""
    try:
        return version("defectscope")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = installed_version()
