"""CSV cells a spreadsheet will not run: text starting like a formula gets a leading quote."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value`` for a CSV cell; text such as ``=SUM(1+1)`` becomes ``'=SUM(1+1)`` (OWASP).

    Numbers, also written as text (``-0.25``), are left alone, so negative values stay numbers.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text.lower().lstrip("+-") not in ("inf", "infinity", "nan")


def safe_row(values) -> list:
    return [safe_cell(value) for value in values]
