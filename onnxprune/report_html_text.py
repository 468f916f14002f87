"""Shared pieces of the HTML report: colours, sizes and caps, escaping, and small number widgets."""
from __future__ import annotations

import html
import re
from typing import Any

from .formats import number_or_none

KEPT, REMOVED, FROZEN, TRACK = "#2f6fca", "#e4572e", "#a3a9b0", "#e6e9ed"
MAX_LAYER_ROWS = 400  # per-layer bars drawn; the rest are counted in one line
MAX_SCORE_CARDS = 120  # per-group score histograms; more groups: those losing the most channels
MAX_FROZEN_ROWS = 300  # frozen spaces listed one by one
LABEL_CHARS = 64  # a longer name is cut in the middle (the full name is the row's tooltip)
LABEL_W, BAR_W, NUM_W = 440, 560, 170
CARD_W, CARD_H = 150, 40

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def esc(value: Any) -> str:
    """Text safe in HTML and XML content and in quoted attributes (control characters and lone
    surrogates, which a name may hold, become visible escapes)."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)
    return html.escape(text, quote=True)


def short_name(name: Any, limit: int = LABEL_CHARS) -> str:
    """The name, cut in the middle with an ellipsis when longer than `limit`."""
    text = str(name)
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return text[:half] + "\u2026" + text[len(text) - (limit - 1 - half):]


def value_span(number: Any, shown: str) -> str:
    """A shown number whose exact value is in its tooltip and data-value."""
    exact = esc(number if number_or_none(number) is None else f"{number:g}" if isinstance(number, float) else number)
    return f'<span class="n" title="{exact}" data-value="{exact}">{esc(shown)}</span>'


def kept_bar(a: Any, b: Any, width: int = 160) -> str:
    """A small SVG bar: the share b / a kept over the removed rest."""
    a, b = number_or_none(a), number_or_none(b)
    if not a or b is None:
        return ""
    w = max(0.0, min(1.0, b / a)) * width
    return (f"<svg width=\"{width}\" height=\"10\" role=\"img\"><rect width=\"{width}\" height=\"10\" "
            f"fill=\"{REMOVED}\" opacity=\"0.35\"/><rect width=\"{w:.1f}\" height=\"10\" fill=\"{KEPT}\"/></svg>")
