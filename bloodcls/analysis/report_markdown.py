"""The sweep report as files: ``report.md`` (the study's tables beside ours, significance, provenance) and
the CSV tables, from a :class:`~bloodcls.analysis.report.Report`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from bloodcls.analysis.report import Report, _num
from bloodcls.common.markdown import md_table
from bloodcls.common.stats import plus_minus
from bloodcls.data import CLASS_NAMES
from bloodcls.models import study


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
        acc = plus_minus(r["acc_mean"], r["acc_std"])
        tta = [plus_minus(r.get("tta_acc_mean"), r.get("tta_acc_std"))] if with_tta else []
        train = plus_minus(r["train_s_mean"], r["train_s_std"], 1)
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
            cells += [plus_minus(r[f"{key}_mean"], r[f"{key}_std"]), _num(r[f"study_{key}"], 0)]
        rows.append(cells)
    lines += md_table(["experiment", "precision", "study", "recall", "study", "F1", "study"], rows) + [""]

    lines += ["## Per-class F1 (mean over seeds; best per class in bold)", ""]
    names = rep.class_names
    best = {c: max((r[c] for r in rep.tables["per_class_f1"] if r[c] is not None), default=None) for c in names}
    rows = []
    for r in rep.tables["per_class_f1"]:
        rows.append([r["experiment"]] + [
            "–" if r[c] is None else (f"**{r[c]:.3f}**" if best[c] is not None and r[c] >= best[c] else f"{r[c]:.3f}")
            for c in names])
    if names == list(CLASS_NAMES):  # BloodMNIST: the study's own figures beside ours
        rows.append(["study's best"] + [study.BEST_PER_CLASS_F1[c] for c in names])
    lines += md_table(["experiment", *names], rows) + [""]

    if "robustness" in rep.tables:
        lines += ["## Robustness to lab variability (shift suite)", ""]
        rows = [[r["experiment"], str(r["seeds"]), _num(r["clean_acc_mean"]),
                 plus_minus(r["shifted_acc_mean"], r["shifted_acc_std"]), _num(r["drop_mean"])]
                for r in rep.tables["robustness"]]
        lines += md_table(["experiment", "seeds", "clean acc (%)", "mean acc under shifts (%)", "drop (points)"],
                           rows) + [""]

    if "trust" in rep.tables:
        lines += ["## Trust in a prediction (test split; mean ± std over seeds)", "",
                  "Temperature scaling and the review threshold are fitted on validation, the gate on training "
                  "features (docs/guide/trust.md).", ""]
        def pm(r, key):
            return f"{_num(r[f'{key}_mean'])} ± {_num(r[f'{key}_std'])}"
        rows = [[r["experiment"], str(r["seeds"]), pm(r, "ece_before"), pm(r, "ece_after"), pm(r, "aurc"),
                 pm(r, "acc_at_90"), pm(r, "far_ood_auroc"), pm(r, "gate_fires_on_test")] for r in rep.tables["trust"]]
        lines += md_table(["experiment", "seeds", "ECE before (%)", "ECE after (%)", "AURC (%)",
                           "acc at 90 % coverage (%)", "far-OOD AUROC (%)", "gate fires on test (%)"], rows) + [""]

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
