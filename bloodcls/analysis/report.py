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

import yaml

from bloodcls.common.rundir import RESULTS_FILE, ROBUSTNESS_DIR, STATUS_FILE, job_folders, read_json
from bloodcls.common.stats import mcnemar, mean_std, paired_t_test
from bloodcls.data import CLASS_NAMES
from bloodcls.models import study

log = logging.getLogger(__name__)

PLAN_FILE = "sweep.json"


@dataclass
class Run:
    folder: Path
    status: str  # completed | failed | interrupted | running | unfinished
    experiment: str | None
    seed: int | None
    results: dict[str, Any] | None = None
    error: str | None = None
    robustness: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed" and self.results is not None


@dataclass
class Report:
    sweep_dir: Path
    plan: dict[str, Any]
    runs: list[Run]
    experiments: list[str]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    significance: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    missing: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))  # the runs' classes (data=folder: its own)


# The trust columns of the report (x100), from each run's results.json summary (bloodcls.uncertainty.fitting.summary)
TRUST_KEYS = ("ece_before", "ece_after", "aurc", "acc_at_90", "far_ood_auroc", "gate_fires_on_test")


def recipe_of(results: dict[str, Any]) -> str:
    """The run's recipe (conf/recipe/); runs written before recipes existed used the strict Keras layers."""
    return str(results.get("recipe") or "keras (before recipes)")


def _log_tail(folder: Path, lines: int = 8) -> str | None:
    for log_file in sorted(folder.glob("*.log")):
        text = log_file.read_text(errors="replace").strip().splitlines()
        errors = [ln for ln in text if "Error" in ln or "error" in ln or "Traceback" in ln]
        return " | ".join((errors or text)[-lines:]) or None
    return None


def read_run(folder: Path) -> Run:
    """One job folder -> Run, whatever state the job ended in."""
    results = read_json(folder / RESULTS_FILE)
    status_doc = read_json(folder / STATUS_FILE) or {}
    config = {}
    if (folder / ".hydra" / "config.yaml").is_file():
        config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()) or {}
    experiment = (results or {}).get("experiment") or status_doc.get("experiment") or config.get("experiment_name")
    seed = (results or {}).get("seed", config.get("seed"))
    robustness = read_json(folder / ROBUSTNESS_DIR / "robustness.json")
    if results is not None and results.get("status", "completed") == "completed":
        return Run(folder, "completed", experiment, seed, results, robustness=robustness)
    status = status_doc.get("status") or "unfinished"
    if status == "completed":  # status says done but results.json is missing or unreadable
        status = "failed"
    error = status_doc.get("error") or _log_tail(folder)
    return Run(folder, status, experiment, seed, None, error=error)


def collect_runs(runs_dir: Path) -> list[Run]:
    return [read_run(job) for job in job_folders(runs_dir)]


def _values(runs: list[Run], path: tuple[str, ...]) -> list[float]:
    out = []
    for run in runs:
        node: Any = run.results
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and math.isfinite(node):
            out.append(float(node))
    return out


def _mean(values: list[float]) -> float | None:
    m, _ = mean_std(values)
    return None if math.isnan(m) else m


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def build_report(sweep_dir: str | Path) -> Report:
    """Aggregate every run under ``<sweep_dir>/runs`` into the report's tables."""
    sweep_dir = Path(sweep_dir)
    plan = read_json(sweep_dir / PLAN_FILE) or {}
    runs = collect_runs(sweep_dir / "runs")
    planned = list(plan.get("experiments") or [])
    seen = [r.experiment for r in runs if r.experiment]
    experiments = planned + [e for e in dict.fromkeys(seen) if e not in planned]
    rep = Report(sweep_dir, plan, runs, experiments)
    rep.class_names = next((list(r.results["data"]["class_names"]) for r in runs
                            if r.ok and (r.results.get("data") or {}).get("class_names")), rep.class_names)

    # Jobs of the plan that left no folder at all (the sweep stopped before them).
    found = {(r.experiment, r.seed) for r in runs}
    for exp in planned:
        for seed in plan.get("seeds") or []:
            if (exp, seed) not in found:
                rep.missing.append({"experiment": exp, "seed": seed, "status": "not started"})

    perf, macro, per_class, robust, trust = [], [], [], [], []
    for exp in experiments:
        done = [r for r in runs if r.experiment == exp and r.ok]
        ref = study.PERFORMANCE.get(exp, {})

        def eff(key: str, done: list[Run] = done) -> list[float]:
            return _values(done, ("efficiency", key))

        acc = _values(done, ("test", "acc"))
        tta = [100 * a for a in _values(done, ("test_tta", "acc"))]  # model.tta=true: beside, never instead
        perf.append({
            "experiment": exp, "seeds": len(done),
            "params_m": _mean([v / 1e6 for v in eff("params_trainable")]), "study_params_m": ref.get("params_m"),
            "memory_mib": _mean(eff("memory_mib")), "study_memory_mb": ref.get("memory_mb"),
            "macs_m": _mean([v / 1e6 for v in eff("macs")]),
            "acc_mean": _mean([100 * a for a in acc]), "acc_std": mean_std([100 * a for a in acc])[1] if acc else None,
            "study_acc": ref.get("acc"),
            "tta_acc_mean": _mean(tta), "tta_acc_std": mean_std(tta)[1] if tta else None, "tta_seeds": len(tta),
            "epochs_mean": _mean(eff("epochs_run")), "study_epochs": ref.get("epochs"),
            "train_s_mean": _mean(eff("train_time_s")), "train_s_std": mean_std(eff("train_time_s"))[1] if done else None,
            "study_train_s": ref.get("train_s"),
            "test_s_mean": _mean(eff("test_time_s")), "study_test_s": ref.get("test_s"),
            "acc_per_seed": {str(r.seed): 100 * r.results["test"]["acc"] for r in done},
        })
        row = {"experiment": exp, "seeds": len(done)}
        ref_macro = study.MACRO.get(exp, (None, None, None))
        for key, ref_value in zip(("precision", "recall", "f1"), ref_macro, strict=True):
            vals = [100 * v for v in _values(done, ("test", "scores", f"test/{key}"))]
            row[f"{key}_mean"], row[f"{key}_std"] = (_mean(vals), mean_std(vals)[1]) if vals else (None, None)
            row[f"study_{key}"] = ref_value
        macro.append(row)
        pc = {"experiment": exp, "seeds": len(done)}
        for cls in rep.class_names:
            pc[cls] = _mean(_values(done, ("test", "scores", f"test/f1/{cls}")))
        per_class.append(pc)
        with_rob = [r for r in done if r.robustness]
        if with_rob:
            robust.append({
                "experiment": exp, "seeds": len(with_rob),
                "clean_acc_mean": _mean([100 * r.robustness["clean_acc"] for r in with_rob]),
                "shifted_acc_mean": _mean([100 * r.robustness["mean_acc"] for r in with_rob]),
                "shifted_acc_std": mean_std([100 * r.robustness["mean_acc"] for r in with_rob])[1],
                "drop_mean": _mean([100 * r.robustness["drop_acc"] for r in with_rob]),
            })
        with_trust = [r.results["summary"] for r in done if "trust/ece_after" in r.results.get("summary", {})]
        if with_trust:  # callbacks.trust: calibration, abstention and the out-of-distribution gate
            row = {"experiment": exp, "seeds": len(with_trust)}
            for key in TRUST_KEYS:
                vals = [100 * s[f"trust/{key}"] for s in with_trust]
                row[f"{key}_mean"], row[f"{key}_std"] = _mean(vals), mean_std(vals)[1]
            trust.append(row)
    rep.tables = {"performance": perf, "macro": macro, "per_class_f1": per_class}
    if trust:
        rep.tables["trust"] = trust
    if robust:
        rep.tables["robustness"] = robust
    rep.significance = compare_best(rep)
    rep.provenance = provenance(runs)
    return rep


def compare_best(rep: Report) -> dict[str, Any]:
    """Best experiment by mean test accuracy vs. the runner-up: exact McNemar on test predictions
    pooled over the seeds both ran (paired image by image), and a paired t-test over seeds."""
    ranked = sorted((r for r in rep.tables["performance"] if r["acc_mean"] is not None),
                    key=lambda r: r["acc_mean"], reverse=True)
    if len(ranked) < 2:
        return {"best": ranked[0]["experiment"] if ranked else None}
    best, second = ranked[0]["experiment"], ranked[1]["experiment"]
    by_seed = lambda exp: {r.seed: r for r in rep.runs if r.experiment == exp and r.ok}  # noqa: E731
    a_runs, b_runs = by_seed(best), by_seed(second)
    seeds = sorted(set(a_runs) & set(b_runs), key=str)
    correct_a, correct_b, acc_a, acc_b = [], [], [], []
    for seed in seeds:
        ta, tb = a_runs[seed].results["test"], b_runs[seed].results["test"]
        if ta.get("predictions") and tb.get("predictions") and ta.get("labels") == tb.get("labels"):
            correct_a += [p == y for p, y in zip(ta["predictions"], ta["labels"], strict=True)]
            correct_b += [p == y for p, y in zip(tb["predictions"], tb["labels"], strict=True)]
        acc_a.append(ta["acc"])
        acc_b.append(tb["acc"])
    out: dict[str, Any] = {"best": best, "runner_up": second, "seeds": seeds,
                           "acc_best": ranked[0]["acc_mean"], "acc_runner_up": ranked[1]["acc_mean"]}
    if correct_a:
        out["mcnemar"] = mcnemar(correct_a, correct_b)
    out["paired_t_pvalue"] = paired_t_test(acc_a, acc_b)
    p = out.get("mcnemar", {}).get("pvalue")
    out["significant"] = bool(p is not None and p < 0.05)
    return out


def provenance(runs: list[Run]) -> dict[str, Any]:
    done = [r for r in runs if r.ok]
    envs = [r.results.get("environment", {}) for r in done]
    data = {}
    for r in done:
        d = r.results.get("data", {})
        if d.get("path"):
            data[d["path"]] = d.get("md5")
    dates = sorted(e.get("date") for e in envs if e.get("date"))
    return {
        "devices": sorted({e.get("device") for e in envs if e.get("device")}),
        "commits": sorted({e.get("commit") for e in envs if e.get("commit")}),
        "dates": [dates[0], dates[-1]] if dates else [],
        "torch": sorted({e.get("torch") for e in envs if e.get("torch")}),
        "recipes": sorted({recipe_of(r.results) for r in done}),
        "data_files": data,
        "report_built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
