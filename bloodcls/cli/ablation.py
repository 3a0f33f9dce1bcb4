"""``bloodcls ablation``: runs grouped by experiment and recipe (the table of docs/results/ablation.md), from any
folders of runs.

    bloodcls ablation outputs/multiruns/<date>/<time>_<id> outputs/sweeps/<name> [--json out.json]

Arguments only; the work is done by :mod:`bloodcls.analysis.ablation_table`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bloodcls.analysis.ablation_table import ablation_table, find_runs, markdown_table
from bloodcls.cli import summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bloodcls ablation", description=summary(__doc__))
    parser.add_argument("folders", nargs="+", type=Path, help="folders holding run folders (searched recursively)")
    parser.add_argument("--json", type=Path, help="also write the groups, with every seed's numbers, as JSON")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}. Give folders that hold run folders "
              "(outputs/runs/..., outputs/multiruns/..., outputs/sweeps/...).", file=sys.stderr)
        return 2
    rows = ablation_table(find_runs(args.folders))
    if not rows:
        print(f"error: no completed run (a folder with results.json) under {', '.join(map(str, args.folders))}.",
              file=sys.stderr)
        return 2
    print(markdown_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0

