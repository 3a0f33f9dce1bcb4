"""Runs grouped by experiment and recipe: the README's ablation table, from any folders of runs.

    python -m bloodcls.ablation outputs/multiruns/<date>/<time>_<id> outputs/sweeps/<name> [--json out.json]

Every folder below the given ones that holds a ``results.json`` is a run; runs are grouped by
(experiment, recipe) — ``recipe=keras +ablation=init`` is recorded as ``keras+init`` — and each group
gets the test accuracy and macro-F1 as mean ± sample std over its seeds, plus epochs run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from bloodcls.markdown import md_table
from bloodcls.report import read_run, recipe_of
from bloodcls.rundir import RESULTS_FILE
from bloodcls.stats import format_mean_std


def find_runs(folders: list[Path]) -> list[Any]:
    """Every completed run (a folder with ``results.json``) under ``folders``, each once."""
    seen, runs = set(), []
    for folder in folders:
        for path in sorted(Path(folder).rglob(RESULTS_FILE)):
            run = read_run(path.parent)
            if run.ok and path.parent.resolve() not in seen:
                seen.add(path.parent.resolve())
                runs.append(run)
    return runs


def ablation_table(runs: list[Any]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for run in runs:
        groups[(str(run.experiment), recipe_of(run.results))].append(run)
    rows = []
    for (experiment, recipe), members in sorted(groups.items()):
        members.sort(key=lambda r: r.seed if r.seed is not None else -1)
        tta = [100 * r.results["test_tta"]["acc"] for r in members if (r.results.get("test_tta") or {}).get("acc")]
        rows.append({
            "experiment": experiment, "recipe": recipe, "runs": len(members),
            "seeds": [r.seed for r in members],
            "acc": [100 * r.results["test"]["acc"] for r in members],
            "f1": [100 * r.results["test"]["f1"] for r in members],
            "tta_acc": tta,
            "epochs": [r.results["efficiency"]["epochs_run"] for r in members],
            "devices": sorted({r.results.get("environment", {}).get("device", "?") for r in members}),
            "commits": sorted({r.results.get("environment", {}).get("commit", "?") for r in members}),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    body = [[r["experiment"], f"`{r['recipe']}`", ",".join(str(s) for s in r["seeds"]), format_mean_std(r["acc"]),
             " / ".join(f"{a:.1f}" for a in r["acc"]), format_mean_std(r["f1"]), format_mean_std(r["tta_acc"]),
             format_mean_std([float(e) for e in r["epochs"]])] for r in rows]
    header = ["experiment", "recipe", "seeds", "test acc (%)", "per seed", "macro F1 (×100)", "TTA x8 acc (%)",
              "epochs"]
    return "\n".join(md_table(header, body))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bloodcls.ablation", description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    raise SystemExit(main())
