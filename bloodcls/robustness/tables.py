"""The shift suite's Markdown tables over scored runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bloodcls.common.markdown import md_table
from bloodcls.common.stats import format_mean_std


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
    header = ["recipe", "runs", "seeds", "clean acc (%)", "acc under shift (%)", "drop (points)", "clean macro-F1 (%)",
              "macro-F1 under shift (%)"]
    rows = [[name, str(len(runs)), ",".join(str(r.get("train_seed")) for r in runs),
             *(_pct([r[k] for r in runs]) for k in ("clean_acc", "mean_acc", "drop_acc", "clean_f1", "mean_f1"))]
            for name, runs in groups.items()]
    shifts = list(next(iter(groups.values()))[0]["shifts"]) if groups else []
    per_shift = [[shift, *(_pct([r["shifts"][shift]["mean_acc"] for r in runs if shift in r["shifts"]])
                           for runs in groups.values())] for shift in shifts]
    severities = next(iter(groups.values()))[0]["severities"] if groups else []
    per_severity = [[f"all shifts, severity {sev}", *(_pct([r["per_severity"]["acc"][i] for r in runs])
                                                       for runs in groups.values())] for i, sev in enumerate(severities)]
    return "\n".join(md_table(header, rows) + [""]
                     + md_table(["mean acc (%) over severities", *groups], per_shift + per_severity))
