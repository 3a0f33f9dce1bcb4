"""Which prediction-set score should be the default? Chosen on validation, reported on test (issue 40).

    OMP_NUM_THREADS=1 python scripts/set_scores.py <run> [<run> ...] [--coverage 0.9] [--seed 0] [--data-root DIR]
                                                   [--json out.json]

For each run (its best.ckpt and its data's splits) the validation split is cut in two halves, seeded and
stratified by class. On the first, the *tuning* half, the temperature is fitted, RAPS's penalty and kreg are
tuned, and the score is chosen; every figure used there is cross-fitted (a quantile fitted on one quarter is
scored on the other, and the other way round), so the choice rests on coverage the quantile was not fitted on.
On the second, the *calibration* half, only each score's quantile is fitted (tuning on the images the quantile is
fitted on would break the guarantee). The test split, seen by nothing before, then gives each score's coverage at
the target, mean set size, share of single-class sets and worst-class coverage, over every test image (the gate is
left out: this compares scores). The table is mean ± std over the runs given.

The choice: the smallest cross-fitted mean set size among the scores whose worst class keeps at least the target
coverage minus 5 points (85 % at 90 %: the issue's target, with its mean size at most 1.1); if none does, the
highest worst-class coverage. ``bloodcls.uncertainty.conformal.DEFAULT_METHOD`` should follow what this prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcls.common.markdown import md_table
from bloodcls.common.sampling import stratified_sample
from bloodcls.common.stats import format_mean_std
from bloodcls.errors import UserError
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.uncertainty.calibration import fit_temperature
from bloodcls.uncertainty.conformal import ConformalSets, SetOptions
from bloodcls.uncertainty.judgement import calibrated_proba
from bloodcls.uncertainty.outputs import network_outputs
from bloodcls.uncertainty.set_metrics import set_report

PENALTIES = (0.001, 0.01, 0.05, 0.1, 0.2, 0.5)
KREGS = (0, 1, 2, 3)
WORST_CLASS_SLACK = 0.05  # a score may be chosen when its worst class keeps coverage - 5 points
SCORES = ("LAC", "APS", "randomized APS", "RAPS", "LAC, class-conditional", "randomized APS, class-conditional",
          "RAPS, class-conditional")


def halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of ``labels``' indices, each stratified by class (seeded)."""
    first = np.sort(stratified_sample(labels, len(labels) // 2, seed))
    return first, np.setdiff1d(np.arange(len(labels)), first)


def options(name: str, coverage: float, penalty: float = 0.0, kreg: int = 0) -> SetOptions:
    base = name.replace(", class-conditional", "")
    method = {"LAC": "lac", "APS": "aps", "randomized APS": "aps", "RAPS": "raps"}[base]
    return SetOptions(coverage=coverage, method=method, randomized=base in ("randomized APS", "RAPS"),
                      per_class=name.endswith("class-conditional"), penalty=penalty, kreg=kreg)


def figures(fit_p: torch.Tensor, fit_y: torch.Tensor, p: torch.Tensor, y: torch.Tensor, opts: SetOptions,
            names: list[str]) -> dict[str, Any] | None:
    """Fit on (fit_p, fit_y), score on (p, y): coverage, mean size, singletons, worst class; None when a class has
    too few images for class-conditional sets."""
    try:
        sets = ConformalSets.fit(fit_p, fit_y, opts, names)
    except UserError:
        return None
    r = set_report(sets.sets(p), y, opts.coverage, names)
    return {k: r[k] for k in ("coverage", "mean_size", "singletons", "worst_class_coverage")}


def cross_fitted(p: torch.Tensor, y: torch.Tensor, opts: SetOptions, names: list[str], seed: int) -> dict | None:
    """The mean of fitting on one stratified half of (p, y) and scoring on the other, both ways."""
    a, b = halves(y.numpy(), seed)
    both = [figures(p[i], y[i], p[j], y[j], opts, names) for i, j in ((a, b), (b, a))]
    if None in both:
        return None
    return {k: (both[0][k] + both[1][k]) / 2 for k in both[0]}


def tune_raps(p: torch.Tensor, y: torch.Tensor, coverage: float, names: list[str], seed: int) -> tuple[float, int]:
    """RAPS's (penalty, kreg) with the smallest cross-fitted mean set size on the tuning half."""
    best = None
    for penalty in PENALTIES:
        for kreg in KREGS:
            f = cross_fitted(p, y, options("RAPS", coverage, penalty, kreg), names, seed)
            key = (f["mean_size"], coverage - f["coverage"]) if f else (float("inf"), 0.0)
            if best is None or key < best[0]:
                best = (key, penalty, kreg)
    return best[1], best[2]


def choose(tuned: dict[str, dict | None], coverage: float) -> str:
    """The smallest mean size among the scores whose worst class meets the target minus the slack."""
    usable = {k: v for k, v in tuned.items() if v is not None}
    ok = {k: v for k, v in usable.items() if v["worst_class_coverage"] >= coverage - WORST_CLASS_SLACK}
    if ok:
        return min(ok, key=lambda k: (ok[k]["mean_size"], SCORES.index(k)))
    return max(usable, key=lambda k: usable[k]["worst_class_coverage"])


def evaluate_run(run: FinishedRun, coverage: float, seed: int, data_root: str | None = None) -> dict[str, Any]:
    """Tune and choose on one validation half, fit on the other, score on test: one run's figures."""
    model = run.load_model()
    splits = run.load_splits(model.img_size, data_root)
    names = model.class_names
    val = network_outputs(model.net, splits["val"][0])
    test = network_outputs(model.net, splits["test"][0])
    y_val = torch.as_tensor(splits["val"][1]).flatten().long()
    y_test = torch.as_tensor(splits["test"][1]).flatten().long()
    tune, cal = halves(y_val.numpy(), seed)
    temperature = fit_temperature(val.logits[tune], y_val[tune])
    p_val, p_test = calibrated_proba(val.logits, temperature), calibrated_proba(test.logits, temperature)
    penalty, kreg = tune_raps(p_val[tune], y_val[tune], coverage, names, seed + 1)
    all_opts = {name: options(name, coverage, penalty, kreg) for name in SCORES}
    tuned = {name: cross_fitted(p_val[tune], y_val[tune], o, names, seed + 1) for name, o in all_opts.items()}
    test_figures = {name: figures(p_val[cal], y_val[cal], p_test, y_test, o, names) for name, o in all_opts.items()}
    return {"run": str(run.folder), "temperature": temperature, "tuning_images": len(tune),
            "calibration_images": len(cal), "test_images": len(y_test), "raps_penalty": penalty, "raps_kreg": kreg,
            "chosen": choose(tuned, coverage), "tuning": tuned, "test": test_figures}


def table(results: list[dict[str, Any]], coverage: float) -> str:
    """Markdown: per score, how many runs chose it and its test figures (mean ± std over the runs)."""
    chosen = Counter(r["chosen"] for r in results)
    rows = []
    for name in SCORES:
        got = [r["test"][name] for r in results if r["test"][name] is not None]
        rows.append([name, str(chosen.get(name, 0)),
                     format_mean_std([g["coverage"] for g in got], scale=100, digits=1),
                     format_mean_std([g["mean_size"] for g in got], digits=2),
                     format_mean_std([g["singletons"] for g in got], scale=100, digits=1),
                     format_mean_std([g["worst_class_coverage"] for g in got], scale=100, digits=1)])
    head = [f"score (target {100 * coverage:g} %)", f"chosen (of {len(results)} runs)", "test coverage (%)",
            "mean set size", "single-class sets (%)", "worst-class coverage (%)"]
    raps = ", ".join(f"{r['raps_penalty']:g}/{r['raps_kreg']}" for r in results)
    return "\n".join([*md_table(head, rows), "", f"RAPS penalty/kreg tuned per run: {raps}. A dash: a class had too "
                      "few calibration images for class-conditional sets."])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (best.ckpt and the run's data)")
    p.add_argument("--coverage", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0, help="seed of the validation halves")
    p.add_argument("--data-root", help="folder with bloodmnist_<size>.npz (default: the run's data.root)")
    p.add_argument("--json", help="write every run's figures to this file")
    args = p.parse_args(argv)
    results = []
    for run in FinishedRun.find(args.runs):
        results.append(evaluate_run(run, args.coverage, args.seed, args.data_root))
        print(f"{run.folder}: chose {results[-1]['chosen']}", file=sys.stderr, flush=True)
    print(table(results, args.coverage))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
