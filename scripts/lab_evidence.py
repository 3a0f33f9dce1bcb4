#!/usr/bin/env python3
"""Issue 31's evidence: BloodMNIST-trained runs on a "second lab" (scripts/make_lab_folder.py), as they are, after
``bloodcls calibrate`` on 40 labelled images per class, and after fine-tuning on 50 per class.

    python scripts/lab_evidence.py --runs outputs/lab_runs/b64_study_s0 ... --lab outputs/lab --out outputs/lab_eval

Per class of ``<lab>/second_lab`` (100 images each) it draws, with a fixed seed, 40 images to calibrate on, and
the other 60 as the held-out images every score is measured on; for fine-tuning, 40 train + 10 val of those
first 50 and the last 50 as its test split (CSV files with a split column). Writes ``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BLOODCLS = [sys.executable, "-m", "bloodcls"]


def write_csvs(lab: Path, out: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    rows = {"calibrate": [], "heldout": [], "finetune": []}
    for cls in sorted(p for p in (lab / "second_lab").iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.png"))
        files = [files[i] for i in rng.permutation(len(files))]
        for i, f in enumerate(files):
            rows["calibrate" if i < 40 else "heldout"].append((str(f.resolve()), cls.name))
            rows["finetune"].append((str(f.resolve()), cls.name, "train" if i < 40 else "val" if i < 50 else "test"))
    paths = {}
    out.mkdir(parents=True, exist_ok=True)
    for name, items in rows.items():
        paths[name] = out / f"second_lab_{name}.csv"
        with open(paths[name], "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"] + (["split"] if name == "finetune" else []))
            w.writerows(items)
    return paths


def evaluate(ckpt: Path, data: Path, classes: Path, out: Path) -> dict:
    proc = subprocess.run([*BLOODCLS, "evaluate", str(ckpt), str(data), "--classes", str(classes), "--json",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", type=Path, required=True)
    ap.add_argument("--lab", type=Path, default=REPO / "outputs" / "lab")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "lab_eval")
    ap.add_argument("--finetune", action="store_true")
    args = ap.parse_args()
    csvs = write_csvs(args.lab, args.out)
    classes = args.lab / "classes.yaml"
    summary = {}
    for run in args.runs:
        ckpt = run / "checkpoints" / "best.ckpt"
        name = run.name
        r = {"as_is": evaluate(ckpt, csvs["heldout"], classes, args.out / name / "as_is")}
        new = args.out / name / "calibrated.ckpt"
        tuned = args.out / name / "finetune"
        if args.finetune and not (tuned / "results.json").is_file():
            subprocess.run([sys.executable, "train.py", "data=folder", f"data.path={csvs['finetune']}",
                            f"init_from={ckpt}", f"init_classes={classes}", "logger=csv", "threads=1",
                            "trainer.enable_progress_bar=false", f"hydra.run.dir={tuned}"], cwd=REPO, check=True,
                           capture_output=True, text=True)
        if (tuned / "results.json").is_file():
            done = json.loads((tuned / "results.json").read_text())
            r["finetune"] = {"test": done.get("test", {}).get("scores", {}), "init_from": done.get("init_from")}
        r["calibrate"] = json.loads(subprocess.run(
            [*BLOODCLS, "calibrate", str(ckpt), str(csvs["calibrate"]), "--classes", str(classes), "--out", str(new),
             "--json"], cwd=REPO, check=True, capture_output=True, text=True).stdout)
        r["calibrated"] = evaluate(new, csvs["heldout"], classes, args.out / name / "calibrated")
        summary[name] = {k: {kk: v[kk] for kk in ("accuracy", "macro_f1", "calibration", "gate", "review", "sets", "n")
                             if kk in v} if k in ("as_is", "calibrated") else v for k, v in r.items()}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print(name, "done", flush=True)


if __name__ == "__main__":
    main()
