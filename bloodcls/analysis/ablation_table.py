"""Runs grouped by experiment and recipe (the table of docs/results/ablation.md), from any folders of runs.

    bloodcls ablation outputs/multiruns/<date>/<time>_<id> outputs/sweeps/<name> [--json out.json]

Every folder below the given ones that holds a ``results.json`` is a run; runs are grouped by
(experiment, recipe) — ``recipe=keras +ablation=init`` is recorded as ``keras+init`` — and each group
gets the test accuracy and macro-F1 as mean ± sample std over its seeds, plus epochs run.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bloodcls.common.markdown import md_table
from bloodcls.common.rundir import result_folders
from bloodcls.common.stats import format_mean_std
from bloodcls.inference.finished_run import FinishedRun


def find_runs(folders: list[Path]) -> list[FinishedRun]:
    """Every completed run (a folder with ``results.json``) under ``folders``, each once."""
    return [run for folder in result_folders(folders) if (run := FinishedRun.open(folder)).ok]


def ablation_table(runs: list[FinishedRun]) -> list[dict[str, Any]]:
    """One row per (experiment, recipe): every seed's test accuracy, macro-F1, TTA accuracy and epochs."""
    groups: dict[tuple[str, str], list[FinishedRun]] = defaultdict(list)
    for run in runs:
        groups[(str(run.experiment), run.results.recipe_label)].append(run)
    rows = []
    for (experiment, recipe), members in sorted(groups.items()):
        members.sort(key=lambda r: r.seed if r.seed is not None else -1)
        tta = [100 * r.results.test_tta["acc"] for r in members if (r.results.test_tta or {}).get("acc")]
        rows.append({
            "experiment": experiment, "recipe": recipe, "runs": len(members),
            "seeds": [r.seed for r in members],
            "acc": [100 * r.results.test["acc"] for r in members],
            "f1": [100 * r.results.test["f1"] for r in members],
            "tta_acc": tta,
            "epochs": [r.results.efficiency["epochs_run"] for r in members],
            "devices": sorted({r.results.environment.get("device", "?") for r in members}),
            "commits": sorted({r.results.environment.get("commit", "?") for r in members}),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    body = [[r["experiment"], f"`{r['recipe']}`", ",".join(str(s) for s in r["seeds"]), format_mean_std(r["acc"]),
             " / ".join(f"{a:.1f}" for a in r["acc"]), format_mean_std(r["f1"]), format_mean_std(r["tta_acc"]),
             format_mean_std([float(e) for e in r["epochs"]])] for r in rows]
    header = ["experiment", "recipe", "seeds", "test acc (%)", "per seed", "macro F1 (×100)", "TTA x8 acc (%)",
              "epochs"]
    return "\n".join(md_table(header, body))
