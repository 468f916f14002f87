"""Numbers as reports show them: counts as 11.68M, file sizes as 44.58 MB (standard library only,
so the HTML report can draw a saved JSON report without loading numpy)."""
from __future__ import annotations

import math
import numbers
from typing import Any


def number_or_none(value: Any) -> float | None:
    """A finite real number (numpy's included) as float; anything else (bools, strings, NaN, None) as None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


def count_text(n: Any) -> str:
    """A count as 11.68M / 36.16k; "-" when it is not a number."""
    v = number_or_none(n)
    if v is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:g}"


def bytes_text(n: Any) -> str:
    """A file size as 44.58 MB; "-" when it is not a number."""
    v = number_or_none(n)
    if v is None:
        return "-"
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if v >= div:
            return f"{v / div:.2f} {unit}"
    return f"{v:g} B"


__all__ = ["bytes_text", "count_text", "number_or_none"]
