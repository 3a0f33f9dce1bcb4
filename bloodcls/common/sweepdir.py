"""What a sweep folder holds, by name, and the jobs its plan names: the one module that spells them, so the sweep
that writes the folder (bloodcls.sweeps) and the report that reads it (bloodcls.analysis) share one spelling.

    <sweep>/sweep.json                  the plan: experiments, seeds, folds, overrides, command (the multirun; null
                                        when jobs were left to a footing of published runs, ``published``: then
                                        ``commands`` holds the train.py command of each job it ran), resumes
    <sweep>/sweep.lock                  host, pid, start and heartbeat of the process running the sweep
    <sweep>/jobs.txt                    one status line per planned job, rewritten while the sweep runs
    <sweep>/runs/<n>_<run name>/        every job's run folder (its files: common/rundir.py)
    <sweep>/runs/.restarted/            folders of jobs that were started again, kept aside
    <sweep>/report.md, report.json      the report (bloodcls.analysis), beside its CSV tables and figures/
"""

from __future__ import annotations

from typing import Any

PLAN_FILE = "sweep.json"
LOCK_FILE = "sweep.lock"
JOBS_FILE = "jobs.txt"
RUNS_DIR = "runs"
SET_ASIDE_DIR = ".restarted"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
FIGURES_DIR = "figures"


def fold_list(folds: int | None) -> list[int | None]:
    """The folds each (experiment, seed) runs: 0..K-1, or [None] for a sweep without folds."""
    return list(range(folds)) if folds else [None]


def planned_jobs(plan: dict[str, Any]) -> list[tuple[str, int, int | None]]:
    """(experiment, seed, fold) in the order Hydra's multirun launches them: experiment-major, then seed, then
    fold (None without ``folds``); the jobs a footing had published before the sweep started them are not the
    sweep's to train (:func:`published_jobs`)."""
    skip = published_jobs(plan)
    return [(e, int(s), f) for e in plan.get("experiments") or [] for s in plan.get("seeds") or []
            for f in fold_list(plan.get("folds")) if (e, int(s)) not in skip]


def published_jobs(plan: dict[str, Any]) -> set[tuple[str, int]]:
    """(experiment, seed) of the plan's jobs that ``published=results/<footing>`` left to the footing's records."""
    return {(str(e), int(s)) for e, s in (plan.get("published") or {}).get("jobs") or []}


def job_label(seed: int, fold: int | None) -> str:
    """``seed 0`` or ``seed 0 fold 2``: how a job is named in status lines and the report."""
    return f"seed {seed}" if fold is None else f"seed {seed} fold {fold}"
