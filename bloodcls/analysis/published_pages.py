"""The Markdown pages that hold generated tables: each table sits between two marker comments

    <!-- table:study:study-fp32-cpu begin -->
    ... (rewritten by `bloodcls tables`) ...
    <!-- table:study:study-fp32-cpu end -->

and is rewritten in place from ``results/`` (:mod:`bloodcls.analysis.published_tables`); the rest of each page
stays hand-written. ``check`` is the drift test's question: does any page differ from what the records give?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from bloodcls.analysis.published import RESULTS_DIR, load_footings
from bloodcls.analysis.published_tables import render
from bloodcls.common.files import atomic_write
from bloodcls.common.markdown import block_names, closed_block_names, fill_blocks
from bloodcls.errors import UserError


@dataclass(frozen=True)
class Page:
    path: Path
    old: str
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def name(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix() if self.path.is_relative_to(root) else str(self.path)

    def diff(self, root: Path) -> str:
        name = self.name(root)
        return "".join(difflib.unified_diff(self.old.splitlines(True), self.new.splitlines(True),
                                            f"a/{name}", f"b/{name} (bloodcls tables)"))


def pages_with_tables(root: Path) -> list[Path]:
    """README.md and every page under docs/ that holds a generated table."""
    candidates = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in candidates if p.is_file() and block_names(p.read_text())]


def regenerated(path: Path, root: Path, footings: dict) -> Page:
    """One page as it is and as the records give it; a UserError for a marker left open."""
    text = path.read_text()
    closed = closed_block_names(text)
    if open_ := [n for n in block_names(text) if n not in closed]:
        raise UserError(f"{path}: the generated table {open_[0]!r} opens (<!-- table:{open_[0]} begin -->) but "
                        f"never closes; add <!-- table:{open_[0]} end --> on a line of its own after it.")

    def lines(name: str) -> list[str]:
        kind, _, footing = name.partition(":")
        return render(kind, footing, footings, path, root)

    return Page(path, text, fill_blocks(text, lines))


def regenerate(root: str | Path = ".", files: list[Path] | None = None, results: str | Path | None = None,
               write: bool = True) -> list[Page]:
    """Every page's generated tables from ``<root>/results`` (or ``results``); written back when ``write``.
    Returns the pages with tables, changed or not."""
    root = Path(root).resolve()
    results = Path(results) if results is not None else root / RESULTS_DIR
    if not results.is_dir():
        raise UserError(f"{results} is not a folder: the tables are generated from the published records in the "
                        "repository's results/ folder. Run the command from the repository's root (or give --root).")
    footings = load_footings(results)
    pages = [regenerated(Path(p).resolve(), root, footings) for p in (files or pages_with_tables(root))]
    if write:
        for page in pages:
            if page.changed:
                atomic_write(page.path, lambda tmp, text=page.new: tmp.write_text(text))
    return pages
