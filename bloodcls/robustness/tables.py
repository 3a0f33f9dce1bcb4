"""The shift suite's Markdown tables over scored runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bloodcls.common.markdown import md_table
from bloodcls.common.records import RobustnessRecord
from bloodcls.common.stats import format_mean_std


def _pct(values: Sequence[float]) -> str:
    return format_mean_std(values, scale=100, bare_single=True)


def summary_table(records: Sequence[RobustnessRecord]) -> str:
    """Markdown tables over scored runs, grouped by experiment: mean ± std (sample) over the runs.

    The first table has clean and shifted accuracy / macro-F1 and the drop; the second the mean
    accuracy of each shift over its severities, and of each severity over the shifts.
    """
    groups: dict[str, list[RobustnessRecord]] = {}
    for r in records:
        name = str(r.experiment or r.model or Path(r.run or "?").name)
        name += f" `recipe={r.recipe}`" if r.recipe else ""  # runs of one experiment, two recipes
        groups.setdefault(name, []).append(r)
    header = ["recipe", "runs", "seeds", "clean acc (%)", "acc under shift (%)", "drop (points)", "clean macro-F1 (%)",
              "macro-F1 under shift (%)"]
    rows = [[name, str(len(runs)), ",".join(str(r.train_seed) for r in runs),
             *(_pct([getattr(r, k) for r in runs]) for k in ("clean_acc", "mean_acc", "drop_acc", "clean_f1", "mean_f1"))]
            for name, runs in groups.items()]
    first = next(iter(groups.values()))[0] if groups else None
    shifts = list(first.shifts) if first else []
    per_shift = [[shift, *(_pct([r.shifts[shift]["mean_acc"] for r in runs if shift in r.shifts])
                           for runs in groups.values())] for shift in shifts]
    severities = first.severities if first else []
    per_severity = [[f"all shifts, severity {sev}", *(_pct([r.per_severity["acc"][i] for r in runs])
                                                       for runs in groups.values())] for i, sev in enumerate(severities)]
    return "\n".join(md_table(header, rows) + [""]
                     + md_table(["mean acc (%) over severities", *groups], per_shift + per_severity))
