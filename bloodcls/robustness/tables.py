"""The shift suite's Markdown tables over scored runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bloodcls.stats import format_mean_std


def _pct(values: Sequence[float]) -> str:
    return format_mean_std(values, scale=100, bare_single=True)


def summary_table(payloads: Sequence[dict[str, Any]]) -> str:
    """Markdown tables over scored runs, grouped by experiment: mean ± std (sample) over the runs.

    The first table has clean and shifted accuracy / macro-F1 and the drop; the second the mean
    accuracy of each shift over its severities, and of each severity over the shifts.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in payloads:
        name = str(p.get("experiment") or p.get("model") or Path(p["run"]).name)
        name += f" `recipe={p['recipe']}`" if p.get("recipe") else ""  # runs of one experiment, two recipes
        groups.setdefault(name, []).append(p)
    lines = ["| recipe | runs | seeds | clean acc (%) | acc under shift (%) | drop (points) | clean macro-F1 (%) "
             "| macro-F1 under shift (%) |", "|---|---|---|---|---|---|---|---|"]
    for name, runs in groups.items():
        seeds = ",".join(str(r.get("train_seed")) for r in runs)
        lines.append(f"| {name} | {len(runs)} | {seeds} | {_pct([r['clean_acc'] for r in runs])} | "
                     f"{_pct([r['mean_acc'] for r in runs])} | {_pct([r['drop_acc'] for r in runs])} | "
                     f"{_pct([r['clean_f1'] for r in runs])} | {_pct([r['mean_f1'] for r in runs])} |")
    names = list(groups)
    lines += ["", "| mean acc (%) over severities | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    shifts = list(next(iter(groups.values()))[0]["shifts"]) if groups else []
    for shift in shifts:
        cells = [_pct([r["shifts"][shift]["mean_acc"] for r in runs if shift in r["shifts"]])
                 for runs in groups.values()]
        lines.append(f"| {shift} | " + " | ".join(cells) + " |")
    severities = next(iter(groups.values()))[0]["severities"] if groups else []
    for i, sev in enumerate(severities):
        cells = [_pct([r["per_severity"]["acc"][i] for r in runs]) for runs in groups.values()]
        lines.append(f"| all shifts, severity {sev} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
