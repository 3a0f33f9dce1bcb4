"""Sweep report: collect run folders, aggregate over seeds, and write the study's tables beside ours.

Input is only what runs leave on disk (``results.json``; ``status.json`` or the job log for runs
that did not finish), so a report can be rebuilt at any time, also from a partial sweep.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bloodcls import study
from bloodcls.data import CLASS_NAMES
from bloodcls.markdown import md_table
from bloodcls.rundir import RESULTS_FILE, ROBUSTNESS_DIR, STATUS_FILE, read_json
from bloodcls.stats import mcnemar, mean_std, paired_t_test

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
    if not runs_dir.is_dir():
        return []
    return [read_run(job) for job in sorted(runs_dir.iterdir(), key=lambda p: p.name) if job.is_dir()]


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

    # Jobs of the plan that left no folder at all (the sweep stopped before them).
    found = {(r.experiment, r.seed) for r in runs}
    for exp in planned:
        for seed in plan.get("seeds") or []:
            if (exp, seed) not in found:
                rep.missing.append({"experiment": exp, "seed": seed, "status": "not started"})

    perf, macro, per_class, robust = [], [], [], []
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
        for cls in CLASS_NAMES:
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
    rep.tables = {"performance": perf, "macro": macro, "per_class_f1": per_class}
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


# -- writing ----------------------------------------------------------------------------------------
def markdown(rep: Report, figures: dict[str, str] | None = None) -> str:
    lines = [f"# Sweep report: {rep.sweep_dir.name}", ""]
    ok = sum(r.ok for r in rep.runs)
    seeds = rep.plan.get("seeds")
    lines += [f"{ok} of {len(rep.runs) + len(rep.missing)} jobs finished"
              + (f" (experiments × seeds {seeds})" if seeds else "") + ". Ours: mean ± std over seeds "
              "(sample std); study: its single Keras run on an L4.", ""]
    prov = rep.provenance
    lines += ["**Ran on** " + (", ".join(prov["devices"]) or "–") + "; commit " + (", ".join(prov["commits"]) or "–")
              + "; " + (" to ".join(prov["dates"]) if prov["dates"] else "–") + "; torch " + ", ".join(prov["torch"]), ""]
    if prov.get("recipes"):
        lines.append("- recipe: " + ", ".join(f"`{r}`" for r in prov["recipes"]) + " (conf/recipe/)")
    for path, md5 in prov["data_files"].items():
        lines.append(f"- data: `{path}` (MD5 `{md5}`)")
    overrides = rep.plan.get("overrides")
    if overrides:
        lines.append(f"- training overrides: `{' '.join(overrides)}`")
    if rep.plan.get("train_wall_s") is not None:
        lines.append(f"- wall time of the sweep's training (all jobs, start to end): {rep.plan['train_wall_s']:.0f} s")
    if rep.plan.get("note"):
        lines.append(f"- {rep.plan['note']}")
    lines.append("")

    lines += ["## Performance and complexity", ""]
    rows = []
    with_tta = any(r.get("tta_seeds") for r in rep.tables["performance"])
    for r in rep.tables["performance"]:
        acc = "–" if r["acc_mean"] is None else f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}"
        tta = [] if not with_tta else [
            "–" if r.get("tta_acc_mean") is None else f"{r['tta_acc_mean']:.2f} ± {r['tta_acc_std']:.2f}"]
        train = "–" if r["train_s_mean"] is None else f"{r['train_s_mean']:.1f} ± {r['train_s_std']:.1f}"
        rows.append([r["experiment"], str(r["seeds"]), _num(r["params_m"]), _num(r["study_params_m"]),
                     _num(r["memory_mib"]), _num(r["study_memory_mb"]), _num(r["macs_m"], 1), acc, *tta,
                     _num(r["study_acc"]), _num(r["epochs_mean"], 1), _num(r["study_epochs"], 0), train,
                     _num(r["study_train_s"]), _num(r["test_s_mean"]), _num(r["study_test_s"])])
    lines += md_table(["experiment", "seeds", "params (M)", "study", "memory (MiB)", "study", "MACs (M)",
                        "test acc (%)", *(["test acc, TTA x8 (%)"] if with_tta else []), "study", "epochs", "study",
                        "train time (s)", "study", "test time (s)", "study"], rows)
    lines += ["", f"Note: {study.PERFORMANCE_NOTE} Times are wall-clock on the devices above, not comparable "
              "across machines.", ""]

    lines += ["## Macro precision, recall and F1 (×100)", ""]
    rows = []
    for r in rep.tables["macro"]:
        cells = [r["experiment"]]
        for key in ("precision", "recall", "f1"):
            mean, std = r[f"{key}_mean"], r[f"{key}_std"]
            cells += ["–" if mean is None else f"{mean:.2f} ± {std:.2f}", _num(r[f"study_{key}"], 0)]
        rows.append(cells)
    lines += md_table(["experiment", "precision", "study", "recall", "study", "F1", "study"], rows) + [""]

    lines += ["## Per-class F1 (mean over seeds; best per class in bold)", ""]
    best = {c: max((r[c] for r in rep.tables["per_class_f1"] if r[c] is not None), default=None) for c in CLASS_NAMES}
    rows = []
    for r in rep.tables["per_class_f1"]:
        rows.append([r["experiment"]] + [
            "–" if r[c] is None else (f"**{r[c]:.3f}**" if best[c] is not None and r[c] >= best[c] else f"{r[c]:.3f}")
            for c in CLASS_NAMES])
    rows.append(["study's best"] + [study.BEST_PER_CLASS_F1[c] for c in CLASS_NAMES])
    lines += md_table(["experiment", *CLASS_NAMES], rows) + [""]

    if "robustness" in rep.tables:
        lines += ["## Robustness to lab variability (shift suite)", ""]
        rows = [[r["experiment"], str(r["seeds"]), _num(r["clean_acc_mean"]),
                 f"{_num(r['shifted_acc_mean'])} ± {_num(r['shifted_acc_std'])}", _num(r["drop_mean"])]
                for r in rep.tables["robustness"]]
        lines += md_table(["experiment", "seeds", "clean acc (%)", "mean acc under shifts (%)", "drop (points)"],
                           rows) + [""]

    sig = rep.significance
    lines += ["## Best experiment", ""]
    if sig.get("runner_up"):
        mc = sig.get("mcnemar")
        lines.append(f"**{sig['best']}** ({sig['acc_best']:.2f} %) vs. runner-up **{sig['runner_up']}** "
                     f"({sig['acc_runner_up']:.2f} %), over seeds {sig['seeds']}.")
        if mc:
            lines.append(f"- Exact McNemar test on the test predictions pooled over those seeds (paired image by "
                         f"image, {mc['n_pairs']} pairs): {mc['a_only']} images only {sig['best']} got right, "
                         f"{mc['b_only']} only {sig['runner_up']}; p = {mc['pvalue']:.3g} -> "
                         + ("significant at 0.05." if sig["significant"] else "not significant at 0.05."))
        if sig.get("paired_t_pvalue") is not None:
            lines.append(f"- Paired t-test on per-seed accuracy: p = {sig['paired_t_pvalue']:.3g}.")
    elif sig.get("best"):
        lines.append(f"Only **{sig['best']}** finished; nothing to compare.")
    else:
        lines.append("No experiment finished.")
    lines.append("")

    failed = [r for r in rep.runs if not r.ok]
    if failed or rep.missing:
        lines += ["## Jobs that did not finish", ""]
        rows = [[r.folder.name, str(r.experiment), str(r.seed), r.status, (r.error or "").replace("|", "/")[:300]]
                for r in failed]
        rows += [["–", m["experiment"], str(m["seed"]), m["status"], ""] for m in rep.missing]
        lines += md_table(["job", "experiment", "seed", "status", "error"], rows) + [""]

    if figures:
        lines += ["## Figures", ""]
        for title, rel in figures.items():
            lines.append(f"![{title}]({rel})")
        lines.append("")
    return "\n".join(lines)


def write_tables(rep: Report, out: Path) -> None:
    """The report's tables as CSV (one file each) and everything as report.json."""
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in rep.tables.items():
        if not rows:
            continue
        keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)]
        with open(out / f"{name}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    payload = {
        "sweep": rep.sweep_dir.name, "plan": rep.plan, "tables": rep.tables, "significance": rep.significance,
        "provenance": rep.provenance,
        "runs": [{"folder": str(r.folder), "experiment": r.experiment, "seed": r.seed, "status": r.status,
                  "error": r.error, "test_acc": (r.results or {}).get("test", {}).get("acc")} for r in rep.runs],
        "missing": rep.missing,
    }
    (out / "report.json").write_text(json.dumps(payload, indent=2, default=str))
