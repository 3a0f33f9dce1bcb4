#!/usr/bin/env python3
"""The "second lab" evidence of docs/results/own-images.md: BloodMNIST-trained runs on another lab's cells
(scripts/make_lab_folder.py) as they are, re-calibrated (marginal and class-conditional sets), adapted without
labels on 50, 200 and all of the lab's unlabelled pool, adapted then re-calibrated, and fine-tuned.

    python scripts/lab_evidence.py --runs <run> [<run> ...] --lab outputs/lab --out outputs/lab_eval [--finetune]
        [--method lac|aps|raps]   # the set score calibrate fits (default: the tool's default)
    python scripts/lab_evidence.py --table outputs/lab_eval/summary.json      # the page's tables again

Per class of ``<lab>/second_lab`` (100 images each) it draws, with a fixed seed, 40 images for the *pool* (what a
lab has to calibrate on: labelled for ``calibrate``, their labels ignored by ``adapt``) and 60 *held-out* images
that every figure is measured on (never adapted or calibrated on); fine-tuning takes 40 train + 10 val of the
first 50 and the last 50 as its test split. Everything goes through the command line as a lab would use it
(``bloodcls evaluate / calibrate / adapt``); the gate's refusals of non-cell images come from the shift suite's
far-OOD sets (photos, crops, plain colours, noise) judged by the one judgement. Writes ``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BLOODCLS = [sys.executable, "-m", "bloodcls"]
POOL, ADAPT_COUNTS = 40, (50, 200)  # per class in the pool; pool sizes adapted on (in total), besides all of it
MIN_SET_IMAGES = 20  # sets' figures over fewer accepted images are not printed


def write_csvs(lab: Path, out: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"calibrate": [], "heldout": [], "finetune": []}
    for cls in sorted(p for p in (lab / "second_lab").iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.png"))
        files = [files[i] for i in rng.permutation(len(files))]
        for i, f in enumerate(files):
            rows["calibrate" if i < POOL else "heldout"].append((str(f.resolve()), cls.name))
            rows["finetune"].append((str(f.resolve()), cls.name, "train" if i < 40 else "val" if i < 50 else "test"))
    pool = [rows["calibrate"][i] for i in rng.permutation(len(rows["calibrate"]))]  # mixed classes, then cut
    for n in ADAPT_COUNTS:
        rows[f"pool_{n}"] = pool[:n]
    rows["pool_all"] = pool
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, items in rows.items():
        paths[name] = out / f"second_lab_{name}.csv"
        with open(paths[name], "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"] + (["split"] if name == "finetune" else []))
            w.writerows(items)
    return paths


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BLOODCLS, *map(str, args)], capture_output=True, text=True, cwd=REPO)


def evaluate(ckpt: Path, data: Path, classes: Path, out: Path) -> dict:
    proc = cli("evaluate", ckpt, data, "--classes", classes, "--json", "--out", out)
    if proc.returncode:
        raise SystemExit(f"evaluate {ckpt} failed:\n{proc.stderr}")
    report = json.loads(proc.stdout)
    sets = report.get("sets") or {}
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "n": report["n"],
            "ece": (report["calibration"].get("after") or report["calibration"]["before"]).get("ece"),
            "gate_refuses": (report.get("gate") or {}).get("share"), "review": (report.get("review") or {}).get("share"),
            "sets": {k: sets.get(k) for k in ("coverage", "mean_size", "singletons", "worst_class_coverage",
                                              "gate_refused_share", "sscv", "images")},
            "sets_per_class": [(c["class"], c["coverage"]) for c in sets.get("per_class", [])]}


def calibrate(ckpt: Path, data: Path, classes: Path, out: Path, *extra: str) -> dict:
    proc = cli("calibrate", ckpt, data, "--classes", classes, "--out", out, "--json", *extra)
    if proc.returncode:
        raise SystemExit(f"calibrate {ckpt} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def adapt(ckpt: Path, data: Path, out: Path) -> dict:
    """``bloodcls adapt`` as a lab runs it; a refusal by the guard is recorded, then forced so the rows exist."""
    proc = cli("adapt", ckpt, data, "--out", out, "--json")
    record = {"refused": None}
    if proc.returncode == 2:
        record["refused"] = proc.stderr.strip()
        proc = cli("adapt", ckpt, data, "--out", out, "--json", "--force")
    if proc.returncode:
        raise SystemExit(f"adapt {ckpt} failed:\n{proc.stderr}")
    return {**record, **json.loads(proc.stdout)}


def far_ood_refused(ckpt: Path, size: int, n: int = 200, seed: int = 1) -> float | None:
    """Share of the far-OOD sets (non-cell images) the model's gate turns away."""
    from bloodcls.inference.checkpoint import load_trained
    from bloodcls.inference.classify import judge_images
    from bloodcls.uncertainty.far_ood import far_ood_sets

    model = load_trained(ckpt)
    if model.trust is None:
        return None
    images = np.concatenate(list(far_ood_sets(size, n=n, seed=seed).values()))
    return float(1 - judge_images(model, images).accepted.double().mean())


def one_run(run: Path, csvs: dict[str, Path], classes: Path, out: Path, finetune: bool, done: dict | None,
            method: str | None = None) -> dict:
    """Every row for one run; the rows of an earlier pass (``done``) are kept, so ``--finetune`` only adds its row."""
    ckpt, here = run / "checkpoints" / "best.ckpt", out / run.name
    r = dict(done or {})
    if "held_out" not in r:
        r.update(held_out_rows(ckpt, csvs, classes, here, ("--method", method) if method else ()))
    tuned = here / "finetune"
    if finetune and not (tuned / "results.json").is_file():
        subprocess.run([sys.executable, "train.py", "data=folder", f"data.path={csvs['finetune']}",
                        f"init_from={ckpt}", f"init_classes={classes}", "logger=csv", "threads=1",
                        "trainer.enable_progress_bar=false", f"hydra.run.dir={tuned}"], cwd=REPO, check=True,
                       capture_output=True, text=True)
    if (tuned / "results.json").is_file():
        done_ft = json.loads((tuned / "results.json").read_text())
        r["finetune"] = {"acc": done_ft["test"]["acc"], "init_from": (done_ft.get("init_from") or {}).get("test")}
    return r


def held_out_rows(ckpt: Path, csvs: dict[str, Path], classes: Path, here: Path, method: tuple[str, ...] = ()) -> dict:
    from bloodcls.inference.checkpoint import load_trained
    size = load_trained(ckpt).img_size
    models: dict[str, Path] = {"as_is": ckpt}
    r: dict = {"calibrate": {}, "adapt": {}}
    for name, extra in (("calibrated", ()), ("calibrated_per_class", ("--per-class",))):
        models[name] = here / f"{name}.ckpt"
        r["calibrate"][name] = calibrate(ckpt, csvs["calibrate"], classes, models[name], *extra, *method)
    for n in (*ADAPT_COUNTS, "all"):
        models[f"adapted_{n}"] = here / f"adapted_{n}.ckpt"
        r["adapt"][f"adapted_{n}"] = adapt(ckpt, csvs[f"pool_{n}"], models[f"adapted_{n}"])
    models["adapted_all_calibrated"] = here / "adapted_all_calibrated.ckpt"
    r["calibrate"]["adapted_all_calibrated"] = calibrate(models["adapted_all"], csvs["calibrate"], classes,
                                                         models["adapted_all_calibrated"], *method)
    r["held_out"] = {name: {**evaluate(path, csvs["heldout"], classes, here / name),
                            "far_ood_refused": far_ood_refused(path, size)} for name, path in models.items()}
    return r


ROWS = [("as_is", "as it is"), ("adapted_50", "adapted on 50 unlabelled"), ("adapted_200", "adapted on 200 unlabelled"),
        ("adapted_all", "adapted on all 320 unlabelled"), ("calibrated", "calibrated on 40 per class (marginal sets)"),
        ("calibrated_per_class", "calibrated on 40 per class, class-conditional sets"),
        ("adapted_all_calibrated", "adapted on 320, then calibrated on them")]


def _ms(values: list, scale: float = 100.0, digits: int = 1) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(summary: dict) -> str:
    runs = list(summary.values())
    lines = ["| model | accuracy (%) | ECE (%) | gate refuses the lab's cells (%) | gate refuses non-cells (%) | "
             "90 % sets: coverage (%) | mean size | worst class (%) |", "|---|---|---|---|---|---|---|---|"]
    for key, label in ROWS:
        rows = [r["held_out"][key] for r in runs if key in r.get("held_out", {})]
        if not rows:
            continue
        sets = [r["sets"] for r in rows]
        few = [s.get("images") or 0 for s in sets]
        if any(s.get("coverage") is not None for s in sets) and min(few) < MIN_SET_IMAGES:  # coverage over a handful of accepted images says nothing
            set_cells = f"– (the gate accepts {min(few)}–{max(few)} images) | – | –"
        else:
            set_cells = (f"{_ms([s['coverage'] for s in sets])} | {_ms([s['mean_size'] for s in sets], 1, 2)} | "
                         f"{_ms([s['worst_class_coverage'] for s in sets])}")
        lines.append(f"| {label} | {_ms([r['accuracy'] for r in rows])} | {_ms([r['ece'] for r in rows])} | "
                     f"{_ms([r['gate_refuses'] for r in rows])} | {_ms([r['far_ood_refused'] for r in rows])} | "
                     f"{set_cells} |")
    tuned = [r["finetune"]["acc"] for r in runs if "finetune" in r]
    if tuned:
        lines.append(f"| fine-tuned on 50 per class (its own 400-image test) | {_ms(tuned)} | | | | | | |")
    return "\n".join(lines)


SET_ROWS = (("calibrated", "marginal sets"), ("calibrated_per_class", "class-conditional sets"),
            ("adapted_all_calibrated", "adapted on 320, then marginal sets"))


def class_table(summary: dict) -> str:
    """Coverage per class of the held-out cells' 90 % sets (mean ± std over the runs): the worst class of the
    main table, and the seven others beside it."""
    runs = list(summary.values())
    columns = [(key, label) for key, label in SET_ROWS if all(key in r.get("held_out", {}) for r in runs)]
    if not runs or not columns:
        return ""
    classes = [name for name, _ in runs[0]["held_out"][columns[0][0]]["sets_per_class"]]
    lines = ["| class | " + " | ".join(f"{label} (%)" for _, label in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name in classes:
        cells = [_ms([dict(r["held_out"][key]["sets_per_class"]).get(name) for r in runs]) for key, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", type=Path)
    ap.add_argument("--lab", type=Path, default=REPO / "outputs" / "lab")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "lab_eval")
    ap.add_argument("--finetune", action="store_true")
    ap.add_argument("--method", choices=("lac", "aps", "raps"), help="the set score calibrate fits (default: its own)")
    ap.add_argument("--table", type=Path, help="print the tables of a summary.json and stop")
    args = ap.parse_args()
    if args.table:
        summary = json.loads(args.table.read_text())
        print(table(summary), class_table(summary), sep="\n\n")
        return
    csvs = write_csvs(args.lab, args.out)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for run in args.runs or []:
        summary[run.name] = one_run(run, csvs, args.lab / "classes.yaml", args.out, args.finetune, summary.get(run.name),
                                    args.method)
        summary_path.write_text(json.dumps(summary, indent=1, default=str))
        print(run.name, "done", flush=True)
    print(table(summary))


if __name__ == "__main__":
    main()
