"""The sweep report as files: ``report.md`` (the study's tables beside ours, significance, provenance),
the CSV tables, ``report.json`` and the figures, from a :class:`~bloodcls.analysis.report.Report`."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from bloodcls.analysis.report import Report, build_report
from bloodcls.analysis.report_wandb import log_report_to_wandb
from bloodcls.common.markdown import md_table, number
from bloodcls.common.stats import plus_minus
from bloodcls.common.sweepdir import FIGURES_DIR, REPORT_JSON, REPORT_MD, job_label
from bloodcls.data import CLASS_NAMES
from bloodcls.models import study

log = logging.getLogger(__name__)


def write_report(sweep_dir: Path, overrides: list[str] | None = None, wandb_report: bool = False) -> Report:
    """Build the report of ``sweep_dir`` from what its runs left on disk and write every file of it (and its W&B
    copy with ``wandb_report``; ``overrides``: the jobs' own, None for those the plan recorded)."""
    from bloodcls.analysis.figures import write_figures  # matplotlib: only when a report is written

    rep = build_report(sweep_dir)
    write_tables(rep, sweep_dir)
    figures = write_figures(rep, sweep_dir / FIGURES_DIR)
    text = markdown(rep, {k: f"{FIGURES_DIR}/{v}" for k, v in figures.items()})
    (sweep_dir / REPORT_MD).write_text(text)
    if wandb_report:
        try:
            log_report_to_wandb(rep, figures, sweep_dir / FIGURES_DIR, overrides or rep.plan.get("overrides", []))
        except Exception as err:  # the report on disk matters more than its copy on W&B
            log.warning("could not log the report to W&B: %s", err)
    return rep


def markdown(rep: Report, figures: dict[str, str] | None = None) -> str:
    """``report.md``: the sections in order, each only where the sweep has something for it."""
    sections = [header(rep), performance(rep), macro(rep), per_class(rep), robustness(rep), trust(rep),
                best_experiment(rep), unfinished(rep), figure_links(figures or {})]
    return "\n".join(line for section in sections for line in section)


def counted(rep: Report) -> str:
    """What a table's mean ± std is over: seeds, or in a folds= sweep its folds (one seed) or runs (folds x seeds)."""
    if not rep.plan.get("folds"):
        return "seeds"
    return "folds" if len(rep.plan.get("seeds") or []) <= 1 else "runs"


def header(rep: Report) -> list[str]:
    """Title, how many jobs finished, and where, when and on what the runs ran."""
    ok = sum(r.ok for r in rep.runs)
    seeds, folds = rep.plan.get("seeds"), rep.plan.get("folds")
    prov = rep.provenance
    lines = [f"# Sweep report: {rep.sweep_dir.name}", "",
             f"{ok} of {len(rep.runs) + len(rep.missing)} jobs finished"
             + (f" (experiments × seeds {seeds}{f' × {folds} folds' if folds else ''})" if seeds else "")
             + f". Ours: mean ± std over {counted(rep)} (sample std); study: its single Keras run on an L4.", "",
             "**Ran on** " + (", ".join(prov["devices"]) or "–") + "; commit " + (", ".join(prov["commits"]) or "–")
             + "; " + (" to ".join(prov["dates"]) if prov["dates"] else "–") + "; torch " + ", ".join(prov["torch"]), ""]
    if prov.get("recipes"):
        lines.append("- recipe: " + ", ".join(f"`{r}`" for r in prov["recipes"]) + " (conf/recipe/)")
    for path, md5 in prov["data_files"].items():
        lines.append(f"- data: `{path}` (MD5 `{md5}`)")
    if left := (rep.plan.get("published") or {}).get("jobs"):
        lines.append(f"- not trained here, published before this sweep started them in "
                     f"`{rep.plan['published']['footing']}`: " + ", ".join(f"{e} seed {s}" for e, s in left))
    if overrides := rep.plan.get("overrides"):
        lines.append(f"- training overrides: `{' '.join(overrides)}`")
    if rep.plan.get("train_wall_s") is not None:
        lines.append(f"- wall time of the sweep's training (all jobs, start to end): {rep.plan['train_wall_s']:.0f} s")
    if rep.plan.get("note"):
        lines.append(f"- {rep.plan['note']}")
    return [*lines, ""]


def performance(rep: Report) -> list[str]:
    """Size, cost, accuracy and time per experiment beside the study's figures."""
    rows = []
    with_tta = any(r.get("tta_seeds") for r in rep.tables["performance"])
    for r in rep.tables["performance"]:
        acc = plus_minus(r["acc_mean"], r["acc_std"])
        tta = [plus_minus(r.get("tta_acc_mean"), r.get("tta_acc_std"))] if with_tta else []
        train = plus_minus(r["train_s_mean"], r["train_s_std"], 1)
        rows.append([r["experiment"], str(r["seeds"]), number(r["params_m"]), number(r["study_params_m"]),
                     number(r["memory_mib"]), number(r["study_memory_mb"]), number(r["macs_m"], 1), acc, *tta,
                     number(r["study_acc"]), number(r["epochs_mean"], 1), number(r["study_epochs"], 0), train,
                     number(r["study_train_s"]), number(r["test_s_mean"]), number(r["study_test_s"]),
                     number(r.get("trust_s_mean"))])
    table = md_table(["experiment", counted(rep), "params (M)", "study", "memory (MiB)", "study", "MACs (M)",
                      "test acc (%)", *(["test acc, TTA x8 (%)"] if with_tta else []), "study", "epochs", "study",
                      "train time (s)", "study", "test time (s)", "study", "trust fit (s)"], rows)
    return ["## Performance and complexity", "", *table, "", f"Note: {study.PERFORMANCE_NOTE} Times are wall-clock "
            "on the devices above, not comparable across machines.", ""]


def macro(rep: Report) -> list[str]:
    rows = []
    for r in rep.tables["macro"]:
        cells = [r["experiment"]]
        for key in ("precision", "recall", "f1"):
            cells += [plus_minus(r[f"{key}_mean"], r[f"{key}_std"]), number(r[f"study_{key}"], 0)]
        rows.append(cells)
    return ["## Macro precision, recall and F1 (×100)", "",
            *md_table(["experiment", "precision", "study", "recall", "study", "F1", "study"], rows), ""]


def per_class(rep: Report) -> list[str]:
    """Per-class F1, the best experiment per class in bold, and (BloodMNIST runs) the study's best."""
    table, names = rep.tables["per_class_f1"], rep.class_names
    best = {c: max((r[c] for r in table if r[c] is not None), default=None) for c in names}
    rows = [[r["experiment"]] + [
        "–" if r[c] is None else (f"**{r[c]:.3f}**" if best[c] is not None and r[c] >= best[c] else f"{r[c]:.3f}")
        for c in names] for r in table]
    if names == list(CLASS_NAMES):  # BloodMNIST: the study's own figures beside ours
        rows.append(["study's best"] + [study.BEST_PER_CLASS_F1[c] for c in names])
    return [f"## Per-class F1 (mean over {counted(rep)}; best per class in bold)", "",
            *md_table(["experiment", *names], rows), ""]


def robustness(rep: Report) -> list[str]:
    if "robustness" not in rep.tables:
        return []
    rows = [[r["experiment"], str(r["seeds"]), number(r["clean_acc_mean"]),
             plus_minus(r["shifted_acc_mean"], r["shifted_acc_std"]), number(r["drop_mean"])]
            for r in rep.tables["robustness"]]
    return ["## Robustness to lab variability (shift suite)", "",
            *md_table(["experiment", counted(rep), "clean acc (%)", "mean acc under shifts (%)", "drop (points)"], rows), ""]


def trust(rep: Report) -> list[str]:
    if "trust" not in rep.tables:
        return []

    def pm(r: dict, key: str) -> str:
        return f"{number(r[f'{key}_mean'])} ± {number(r[f'{key}_std'])}"

    rows = [[r["experiment"], str(r["seeds"]), pm(r, "ece_before"), pm(r, "ece_after"), pm(r, "aurc"),
             pm(r, "acc_at_90"), pm(r, "far_ood_auroc"), pm(r, "gate_fires_on_test")] for r in rep.tables["trust"]]
    return [f"## Trust in a prediction (test split; mean ± std over {counted(rep)})", "",
            "Temperature scaling and the review threshold are fitted on validation, the gate on training "
            "features (docs/guide/trust.md).", "",
            *md_table(["experiment", counted(rep), "ECE before (%)", "ECE after (%)", "AURC (%)",
                       "acc at 90 % coverage (%)", "far-OOD AUROC (%)", "gate fires on test (%)"], rows), ""]


def best_experiment(rep: Report) -> list[str]:
    """The best experiment against the runner-up: McNemar over the test images (each once) and a paired t-test."""
    sig = rep.significance
    lines = ["## Best experiment", ""]
    if sig.get("runner_up"):
        mc = sig.get("mcnemar")
        lines.append(f"**{sig['best']}** ({sig['acc_best']:.2f} %) vs. runner-up **{sig['runner_up']}** "
                     f"({sig['acc_runner_up']:.2f} %), over {'seed/fold pairs' if rep.plan.get('folds') else 'seeds'} "
                     f"{sig['seeds']}.")
        if mc:
            lines.append(f"- Exact McNemar test over the {mc['n_pairs']} test images, each counted once ("
                         f"{mc.get('runs', 1)} runs of each model, averaged per image): {mc['a_only']} images "
                         f"{sig['best']} got right more often than {sig['runner_up']}, {mc['b_only']} the reverse; "
                         f"p = {mc['pvalue']:.3g} -> "
                         + ("significant at 0.05." if sig["significant"] else "not significant at 0.05.")
                         + " It asks whether these trained models differ on images like the test set's (more "
                           "seeds of the same images are not more images); whether the gap holds from seed to "
                           "seed is the t-test's question.")
        if sig.get("paired_t_pvalue") is not None:
            lines.append(f"- Paired t-test on per-seed accuracy: p = {sig['paired_t_pvalue']:.3g}.")
    elif sig.get("best"):
        lines.append(f"Only **{sig['best']}** finished; nothing to compare.")
    else:
        lines.append("No experiment finished.")
    return [*lines, ""]


def unfinished(rep: Report) -> list[str]:
    """The jobs that failed, were interrupted or never started, each with its reason."""
    failed = [r for r in rep.runs if not r.ok]
    if not failed and not rep.missing:
        return []
    rows = [[r.folder.name, str(r.experiment), str(r.seed), r.outcome, (r.error or "").replace("|", "/")[:300]]
            for r in failed]
    rows += [["–", m["experiment"], job_label(m["seed"], m.get("fold")).removeprefix("seed "), m["status"], ""]
             for m in rep.missing]  # "2", or "2 fold 1" in a folds= sweep
    return ["## Jobs that did not finish", "", *md_table(["job", "experiment", "seed", "status", "error"], rows), ""]


def figure_links(figures: dict[str, str]) -> list[str]:
    if not figures:
        return []
    return ["## Figures", "", *(f"![{title}]({rel})" for title, rel in figures.items()), ""]


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
        "runs": [{"folder": str(r.folder), "experiment": r.experiment, "seed": r.seed, "status": r.outcome,
                  "error": r.error, "test_acc": r.results.test.get("acc") if r.ok else None} for r in rep.runs],
        "missing": rep.missing,
    }
    (out / REPORT_JSON).write_text(json.dumps(payload, indent=2, default=str))
