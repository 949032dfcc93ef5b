"""Wording shared by reports and the command line."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 image``, ``2 images``."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"
