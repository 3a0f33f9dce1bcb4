"""``bloodcls tables``: regenerate the tables of training runs in README.md and docs/ from the records in results/.

    bloodcls tables                  # rewrite every generated table in place (between its marker comments)
    bloodcls tables --check          # print a diff and exit 1 where a page differs from the records
    bloodcls tables --significance results/<footing> [--experiments A B]   # McNemar over published predictions

A generated table sits between ``<!-- table:<kind>:<footing> begin -->`` and ``... end -->``; the kinds are
study, beyond and seeds. Arguments only; the work is done by :mod:`bloodcls.analysis.published_pages`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bloodcls.cli import summary
from bloodcls.errors import report_user_errors


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bloodcls tables", description=summary(__doc__))
    p.add_argument("files", nargs="*", type=Path, help="pages to regenerate (default: README.md and docs/**/*.md "
                   "that hold generated tables)")
    p.add_argument("--root", type=Path, default=Path("."), help="the repository's root (default: here)")
    p.add_argument("--check", action="store_true", help="change nothing: print a diff, exit 1 where pages differ")
    p.add_argument("--significance", type=Path, metavar="FOOTING", help="print the best experiment of a footing "
                   "against the runner-up (exact McNemar on the per-image predictions, paired t-test) instead")
    p.add_argument("--experiments", nargs="+", help="with --significance: compare only these experiments")
    args = p.parse_args(argv)
    if args.significance is not None:
        from bloodcls.analysis.published_significance import footing_report
        from bloodcls.analysis.report_markdown import best_experiment

        print("\n".join(best_experiment(footing_report(args.significance, args.experiments))))
        return 0
    from bloodcls.analysis.published_pages import regenerate

    root = args.root.resolve()
    pages = regenerate(root, [f.resolve() for f in args.files] or None, write=not args.check)
    changed = [page for page in pages if page.changed]
    for page in changed:
        print(page.diff(root) if args.check else f"rewrote {page.name(root)}")
    if not changed:
        print(f"{len(pages)} page(s) with generated tables, all as the records give them.")
    return 1 if args.check and changed else 0
