"""How numbers look in tables, reports and terminal output (one place for both)."""

from __future__ import annotations

from typing import Any


def fmt_value(value: Any) -> str:
    """``-`` for missing values, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
