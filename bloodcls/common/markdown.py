"""Markdown tables, the one way reports, the shift suite, the ablation and the benchmark write them."""

from __future__ import annotations

import math


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table: the header, the separator, one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def number(value: float | None, digits: int = 2) -> str:
    """A table cell for one figure: "–" where there is none (None or NaN)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
