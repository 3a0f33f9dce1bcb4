"""Report figures (PNG): accuracy vs. cost, per-class F1, confusion matrices, curves, sample predictions."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bloodcls.analysis.report import Report  # noqa: E402
from bloodcls.data import CLASS_NAMES  # noqa: E402
from bloodcls.errors import UserError  # noqa: E402
from bloodcls.inference.finished_run import FinishedRun  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def accuracy_vs_cost(rep: Report, out: Path) -> dict[str, str]:
    rows = [r for r in rep.tables["performance"] if r["acc_mean"] is not None]
    files = {}
    for key, label, name in (("params_m", "trainable parameters (M)", "acc_vs_params.png"),
                             ("macs_m", "forward MACs per image (M)", "acc_vs_macs.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            ax.errorbar(r[key], r["acc_mean"], yerr=r["acc_std"] or 0, fmt="o", capsize=3)
            ax.annotate(r["experiment"], (r[key], r["acc_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
            if r.get("study_acc") is not None and key == "params_m":
                ax.plot(r[key], r["study_acc"], "x", color="grey")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("accuracy vs. " + ("parameters" if key == "params_m" else "MACs") + " (mean ± std; x: study)")
        files[name] = _save(fig, out / name)
    return files


def per_class_heatmap(rep: Report, out: Path) -> str:
    rows = rep.tables["per_class_f1"]
    names = rep.class_names
    data = np.array([[np.nan if r[c] is None else r[c] for c in names] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 2))
    im = ax.imshow(data, cmap="viridis", vmin=np.nanmin(data) if np.isfinite(data).any() else 0, vmax=1)
    ax.set_xticks(range(len(names)), [c.replace("_", "\n") for c in names], fontsize=8)
    ax.set_yticks(range(len(rows)), [r["experiment"] for r in rows])
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(im, ax=ax, label="F1")
    ax.set_title("per-class F1 (mean over seeds)")
    return _save(fig, out / "per_class_f1.png")


def best_run(rep: Report) -> FinishedRun | None:
    best = rep.significance.get("best")
    runs = [r for r in rep.runs if r.ok and r.experiment == best]
    return max(runs, key=lambda r: r.results.test["acc"], default=None)


def confusion(run: FinishedRun, out: Path) -> str:
    cm = np.array(run.results.test["confusion_matrix"], dtype=float)
    names, n = run_class_names(run), len(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, mat, title, fmt in ((axes[0], cm, "counts", "{:.0f}"), (axes[1], norm, "row-normalised", "{:.2f}")):
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(n), [c[:12] for c in names], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), [c[:12] for c in names], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{run.experiment} seed {run.seed}: {title}")
        for i in range(n):
            for j in range(n):
                ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if mat[i, j] > mat.max() / 2 else "black")
    return _save(fig, out / "confusion_best.png")


def curves(rep: Report, out: Path) -> str:
    exps = [e for e in rep.experiments if any(r.ok and r.experiment == e for r in rep.runs)]
    fig, axes = plt.subplots(len(exps), 2, figsize=(10, 2.6 * len(exps)), squeeze=False)
    for row, exp in zip(axes, exps, strict=True):
        for run in (r for r in rep.runs if r.ok and r.experiment == exp):
            hist = run.results.history
            ep = [h["epoch"] for h in hist]
            for ax, key in ((row[0], "loss"), (row[1], "acc")):
                for stage, style in (("train", "--"), ("val", "-")):
                    values = [h.get(f"{stage}/{key}") for h in hist]
                    if any(v is not None for v in values):
                        ax.plot(ep, values, style, label=f"{stage} s{run.seed}")
        row[0].set_ylabel(exp)
        row[0].set_title("loss" if row is axes[0] else "")
        row[1].set_title("accuracy" if row is axes[0] else "")
        row[1].legend(fontsize=6, ncol=2)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    return _save(fig, out / "curves.png")


def run_class_names(run: FinishedRun) -> list[str]:
    """The run's classes in label order (a folder run's own, else BloodMNIST's)."""
    return list(run.results.data.get("class_names") or CLASS_NAMES)


def sample_predictions(run: FinishedRun, out: Path) -> str | None:
    """One test image per class from the run's own data (its file, or its folder and split), titled True/Pred;
    errors in red."""
    path = Path(run.results.data.get("path") or "")
    try:  # the data file the run read (its folder's root), or for a folder run its folder and split.csv
        images = run.load_splits(run.results.img_size, root=path.parent if path.suffix == ".npz" else None)["test"][0]
    except (UserError, OSError, KeyError) as err:
        log.warning("sample-prediction grid skipped: the run's test images cannot be read (%s)", err)
        return None
    names = run_class_names(run)
    labels, preds = run.results.test["labels"], run.results.test["predictions"]
    fig, axes = plt.subplots(math.ceil(len(names) / 4), 4, figsize=(10, 3.1 * math.ceil(len(names) / 4)), squeeze=False)
    for c, ax in enumerate(axes.flat):
        idx = next((i for i, y in enumerate(labels) if y == c), None)
        ax.axis("off")
        if idx is None:
            continue
        ax.imshow(images[idx])
        wrong = preds[idx] != c
        ax.set_title(f"True: {names[c]}\nPred: {names[preds[idx]]}", fontsize=8,
                     color="red" if wrong else "black")
    fig.suptitle(f"sample test predictions: {run.experiment} seed {run.seed}")
    return _save(fig, out / "sample_predictions.png")


def write_figures(rep: Report, out: Path) -> dict[str, str]:
    """All figures into ``out``; returns {title: file name} for the markdown report."""
    out.mkdir(parents=True, exist_ok=True)
    if not any(r.ok for r in rep.runs):
        return {}
    figs = {f"accuracy vs {k.split('_')[-1][:-4]}": v for k, v in accuracy_vs_cost(rep, out).items()}
    figs["per-class F1"] = per_class_heatmap(rep, out)
    figs["training and validation curves"] = curves(rep, out)
    run = best_run(rep)
    if run is not None:
        figs["confusion matrix of the best run"] = confusion(run, out)
        sample = sample_predictions(run, out)
        if sample:
            figs["sample predictions"] = sample
        diagram = run.paths.reliability  # written by callbacks.trust (or bloodcls trust)
        if diagram.is_file():
            shutil.copyfile(diagram, out / "reliability_best_run.png")
            figs["reliability diagram of the best run (before and after temperature scaling)"] = "reliability_best_run.png"
    return figs
