"""CSV cells a spreadsheet will not run: text starting like a formula gets a leading quote."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value`` for a CSV cell; text such as ``=SUM(1+1)`` becomes ``'=SUM(1+1)`` (OWASP).

    Numbers are left alone, so negative values stay numbers.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(values) -> list:
    return [safe_cell(value) for value in values]
