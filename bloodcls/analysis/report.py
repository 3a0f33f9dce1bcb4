"""Sweep report: collect run folders, aggregate over seeds, and write the study's tables beside ours.

Input is only what runs leave on disk (``results.json``; ``status.json`` or the job log for runs
that did not finish), so a report can be rebuilt at any time, also from a partial sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bloodcls.common.rundir import job_folders, read_json
from bloodcls.common.stats import mcnemar, mean_std, paired_t_test
from bloodcls.common.sweepdir import PLAN_FILE, RUNS_DIR, planned_jobs
from bloodcls.data import CLASS_NAMES
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.models import study

log = logging.getLogger(__name__)


@dataclass
class Report:
    sweep_dir: Path
    plan: dict[str, Any]
    runs: list[FinishedRun]
    experiments: list[str]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    significance: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    missing: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))  # the runs' classes (data=folder: its own)


# The trust columns of the report (x100), from each run's results.json summary (bloodcls.uncertainty.fitting.summary)
TRUST_KEYS = ("ece_before", "ece_after", "aurc", "acc_at_90", "far_ood_auroc", "gate_fires_on_test")


def collect_runs(runs_dir: Path) -> list[FinishedRun]:
    return [FinishedRun.open(job) for job in job_folders(runs_dir)]


def _values(runs: list[FinishedRun], path: tuple[str, ...]) -> list[float]:
    out = []
    for run in runs:
        node: Any = run.results.raw
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and math.isfinite(node):
            out.append(float(node))
    return out


def _mean(values: list[float]) -> float | None:
    m, _ = mean_std(values)
    return None if math.isnan(m) else m


def build_report(sweep_dir: str | Path) -> Report:
    """Aggregate every run under ``<sweep_dir>/runs`` into the report's tables."""
    sweep_dir = Path(sweep_dir)
    plan = read_json(sweep_dir / PLAN_FILE) or {}
    runs = collect_runs(sweep_dir / RUNS_DIR)
    planned = list(plan.get("experiments") or [])
    seen = [r.experiment for r in runs if r.experiment]
    experiments = planned + [e for e in dict.fromkeys(seen) if e not in planned]
    rep = Report(sweep_dir, plan, runs, experiments)
    rep.class_names = next((list(r.results.data["class_names"]) for r in runs
                            if r.ok and r.results.data.get("class_names")), rep.class_names)

    # Jobs of the plan that left no folder at all (the sweep stopped before them).
    found = {(r.experiment, r.seed, r.fold if plan.get("folds") else None) for r in runs}
    for exp, seed, fold in planned_jobs(plan):
        if (exp, seed, fold) not in found:
            rep.missing.append({"experiment": exp, "seed": seed, "fold": fold, "status": "not started"})

    done = {exp: [r for r in runs if r.experiment == exp and r.ok] for exp in experiments}
    rep.tables = {"performance": [performance_row(exp, done[exp]) for exp in experiments],
                  "macro": [macro_row(exp, done[exp]) for exp in experiments],
                  "per_class_f1": [per_class_row(exp, done[exp], rep.class_names) for exp in experiments]}
    trust = [row for exp in experiments if (row := trust_row(exp, done[exp]))]
    robust = [row for exp in experiments if (row := robustness_row(exp, done[exp]))]
    if trust:
        rep.tables["trust"] = trust
    if robust:
        rep.tables["robustness"] = robust
    rep.significance = compare_best(rep)
    rep.provenance = provenance(runs)
    return rep


def performance_row(exp: str, done: list[FinishedRun]) -> dict[str, Any]:
    """Accuracy (plain and TTA), size, cost and time of one experiment's completed runs, beside the study's."""
    ref = study.PERFORMANCE.get(exp, {})

    def eff(key: str) -> list[float]:
        return _values(done, ("efficiency", key))

    acc = [100 * a for a in _values(done, ("test", "acc"))]
    tta = [100 * a for a in _values(done, ("test_tta", "acc"))]  # model.tta=true: beside, never instead
    return {
        "experiment": exp, "seeds": len(done),
        "params_m": _mean([v / 1e6 for v in eff("params_trainable")]), "study_params_m": ref.get("params_m"),
        "memory_mib": _mean(eff("memory_mib")), "study_memory_mb": ref.get("memory_mb"),
        "macs_m": _mean([v / 1e6 for v in eff("macs")]),
        "acc_mean": _mean(acc), "acc_std": mean_std(acc)[1] if acc else None, "study_acc": ref.get("acc"),
        "tta_acc_mean": _mean(tta), "tta_acc_std": mean_std(tta)[1] if tta else None, "tta_seeds": len(tta),
        "epochs_mean": _mean(eff("epochs_run")), "study_epochs": ref.get("epochs"),
        "train_s_mean": _mean(eff("train_time_s")), "train_s_std": mean_std(eff("train_time_s"))[1] if done else None,
        "study_train_s": ref.get("train_s"),
        "test_s_mean": _mean(eff("test_time_s")), "study_test_s": ref.get("test_s"),
        "trust_s_mean": _mean(eff("trust_time_s")),  # callbacks.trust's fit after the test, not in the study
        "acc_per_seed": {str(r.seed): 100 * r.results.test["acc"] for r in done},
    }


def macro_row(exp: str, done: list[FinishedRun]) -> dict[str, Any]:
    """Macro precision, recall and F1 (x100), mean and std over seeds, beside the study's."""
    row: dict[str, Any] = {"experiment": exp, "seeds": len(done)}
    for key, ref_value in zip(("precision", "recall", "f1"), study.MACRO.get(exp, (None, None, None)), strict=True):
        vals = [100 * v for v in _values(done, ("test", "scores", f"test/{key}"))]
        row[f"{key}_mean"], row[f"{key}_std"] = (_mean(vals), mean_std(vals)[1]) if vals else (None, None)
        row[f"study_{key}"] = ref_value
    return row


def per_class_row(exp: str, done: list[FinishedRun], class_names: list[str]) -> dict[str, Any]:
    """Per-class test F1, mean over seeds."""
    return {"experiment": exp, "seeds": len(done),
            **{cls: _mean(_values(done, ("test", "scores", f"test/f1/{cls}"))) for cls in class_names}}


def robustness_row(exp: str, done: list[FinishedRun]) -> dict[str, Any] | None:
    """Clean and shifted accuracy of the runs the shift suite scored (None: none was)."""
    scored = [r.robustness for r in done if r.robustness]
    if not scored:
        return None
    shifted = [100 * s.mean_acc for s in scored]
    return {"experiment": exp, "seeds": len(scored), "clean_acc_mean": _mean([100 * s.clean_acc for s in scored]),
            "shifted_acc_mean": _mean(shifted), "shifted_acc_std": mean_std(shifted)[1],
            "drop_mean": _mean([100 * s.drop_acc for s in scored])}


def trust_row(exp: str, done: list[FinishedRun]) -> dict[str, Any] | None:
    """Calibration, abstention and the gate (callbacks.trust) of the runs that fitted them (None: none did)."""
    summaries = [r.results.summary for r in done if "trust/ece_after" in r.results.summary]
    if not summaries:
        return None
    row: dict[str, Any] = {"experiment": exp, "seeds": len(summaries)}
    for key in TRUST_KEYS:
        vals = [100 * s[f"trust/{key}"] for s in summaries]
        row[f"{key}_mean"], row[f"{key}_std"] = _mean(vals), mean_std(vals)[1]
    return row


def compare_best(rep: Report) -> dict[str, Any]:
    """Best experiment by mean test accuracy vs. the runner-up over the seeds (and folds) both ran: an exact
    McNemar test that counts each test image once (:func:`mcnemar`: runs that scored the same test images, the
    same labels in the same order, are averaged per image; runs on other test images add their own images), and
    a paired t-test over the runs' accuracies."""
    ranked = sorted((r for r in rep.tables["performance"] if r["acc_mean"] is not None),
                    key=lambda r: r["acc_mean"], reverse=True)
    if len(ranked) < 2:
        return {"best": ranked[0]["experiment"] if ranked else None}
    best, second = ranked[0]["experiment"], ranked[1]["experiment"]
    by_seed = lambda exp: {r.seed if r.fold is None else f"{r.seed}/f{r.fold}": r for r in rep.runs if r.experiment == exp and r.ok}  # noqa: E731
    a_runs, b_runs = by_seed(best), by_seed(second)
    seeds = sorted(set(a_runs) & set(b_runs), key=str)
    tables: dict[tuple, tuple[list, list]] = {}  # test labels -> (A's right/wrong per run, B's), one row per run
    acc_a, acc_b = [], []
    for seed in seeds:
        ta, tb = a_runs[seed].results.test, b_runs[seed].results.test
        if ta.get("predictions") and tb.get("predictions") and ta.get("labels") == tb.get("labels"):
            rows_a, rows_b = tables.setdefault(tuple(ta["labels"]), ([], []))
            rows_a.append([p == y for p, y in zip(ta["predictions"], ta["labels"], strict=True)])
            rows_b.append([p == y for p, y in zip(tb["predictions"], tb["labels"], strict=True)])
        acc_a.append(ta["acc"])
        acc_b.append(tb["acc"])
    out: dict[str, Any] = {"best": best, "runner_up": second, "seeds": seeds,
                           "acc_best": ranked[0]["acc_mean"], "acc_runner_up": ranked[1]["acc_mean"]}
    if tables:  # each image once: the share of its runs each model got right
        share_a = np.concatenate([np.mean(a, axis=0) for a, _ in tables.values()])
        share_b = np.concatenate([np.mean(b, axis=0) for _, b in tables.values()])
        out["mcnemar"] = {**mcnemar(share_a, share_b), "runs": sum(len(a) for a, _ in tables.values())}
    out["paired_t_pvalue"] = paired_t_test(acc_a, acc_b)
    p = out.get("mcnemar", {}).get("pvalue")
    out["significant"] = bool(p is not None and p < 0.05)
    return out


def provenance(runs: list[FinishedRun]) -> dict[str, Any]:
    done = [r for r in runs if r.ok]
    envs = [r.results.environment for r in done]
    data = {}
    for r in done:
        d = r.results.data
        if d.get("path"):
            data[d["path"]] = d.get("md5")
    dates = sorted(e.get("date") for e in envs if e.get("date"))
    return {
        "devices": sorted({e.get("device") for e in envs if e.get("device")}),
        "commits": sorted({e.get("commit") for e in envs if e.get("commit")}),
        "dates": [dates[0], dates[-1]] if dates else [],
        "torch": sorted({e.get("torch") for e in envs if e.get("torch")}),
        "recipes": sorted({r.results.recipe_label for r in done}),
        "data_files": data,
        "report_built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
