"""Markdown tables, the one way reports, the shift suite, the ablation and the benchmark write them."""

from __future__ import annotations


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table: the header, the separator, one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
