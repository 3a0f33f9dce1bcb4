"""Markdown tables, the one way reports, the shift suite, the ablation and the benchmark write them; and the
generated blocks of a hand-written page (the tables ``bloodcls tables`` rewrites between marker comments)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table: the header, the separator, one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def number(value: float | None, digits: int = 2) -> str:
    """A table cell for one figure: "–" where there is none (None or NaN)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# A generated block: everything between the two marker comments is rewritten by its generator; the rest of the page
# stays hand-written. Names are "<kind>:<argument>" (e.g. table:study:study-fp32-cpu). Markers inside fenced code
# (a page that shows how to write one) are text, not blocks.
BLOCK = re.compile(r"^<!-- table:(?P<name>[\w.+-]+:[\w.+-]+) begin -->\n(?P<body>.*?)^<!-- table:(?P=name) end -->$",
                   re.S | re.M)
BEGIN = re.compile(r"^<!-- table:(?P<name>\S+) begin -->$", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)


def _in_code(text: str) -> Callable[[int], bool]:
    spans = [m.span() for m in FENCE.finditer(text)]
    return lambda pos: any(a <= pos < b for a, b in spans)


def block_names(text: str) -> list[str]:
    """The names of the generated blocks that open in ``text``, in order (closed or not)."""
    in_code = _in_code(text)
    return [m["name"] for m in BEGIN.finditer(text) if not in_code(m.start())]


def closed_block_names(text: str) -> list[str]:
    in_code = _in_code(text)
    return [m["name"] for m in BLOCK.finditer(text) if not in_code(m.start())]


def fill_blocks(text: str, render: Callable[[str], list[str]]) -> str:
    """``text`` with each generated block's body replaced by ``render(name)`` (a blank line either side)."""
    in_code = _in_code(text)

    def fill(m: re.Match) -> str:
        if in_code(m.start()):
            return m.group(0)
        return (f"<!-- table:{m['name']} begin -->\n\n" + "\n".join(render(m["name"]))
                + f"\n\n<!-- table:{m['name']} end -->")

    return BLOCK.sub(fill, text)
