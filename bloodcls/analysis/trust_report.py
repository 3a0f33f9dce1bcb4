"""Trust over finished runs: fit the state where a run lacks it, then score the "not a blood-cell image" gate
on far-OOD images and on the shift suite's shifted test copies (near-OOD), with tables over seeds.

Writes ``<run>/trust/trust.json`` and ``<run>/trust/reliability.png``. A run's own ``best.ckpt`` gets the
fitted state (as training does); a checkpoint handed in from elsewhere is never rewritten.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bloodcls.common.markdown import md_table
from bloodcls.common.records import TrustRecord
from bloodcls.common.rundir import write_json
from bloodcls.common.stats import format_mean_std
from bloodcls.common.tensors import to_float_images
from bloodcls.inference.checkpoint import TrainedModel
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.robustness.shifts import SEVERITIES, SHIFTS
from bloodcls.robustness.suite import shift_generator
from bloodcls.runs.environment import environment
from bloodcls.uncertainty.figures import reliability_diagram
from bloodcls.uncertainty.fitting import evaluate_trust, fit_trust, summary
from bloodcls.uncertainty.judgement import judge
from bloodcls.uncertainty.ood import MIN_FAR_OOD_AUROC
from bloodcls.uncertainty.outputs import network_outputs
from bloodcls.uncertainty.state import TrustState


def shift_firing(net: torch.nn.Module, state: TrustState, images: torch.Tensor, seed: int = 0,
                 severities: Sequence[int] = SEVERITIES) -> dict[str, list[float]]:
    """Share of (shifted) test images the gate turns away, per shift, at each severity; ``clean`` first."""
    x = to_float_images(images)

    def fires(batch: torch.Tensor) -> float:
        out = network_outputs(net, batch)
        return float((~judge(out.logits, out.features, state).accepted).double().mean())

    out: dict[str, list[float]] = {"clean": [fires(x)]}
    for name, shift in SHIFTS.items():
        out[name] = [fires(shift(x, sev, shift_generator(seed, name, sev, 0))) for sev in severities]
    return out


def trust_run(run: FinishedRun, arrays: dict[str, tuple[Any, Any]], *, refit: bool = False, shift_images: int = 1000,
              seed: int = 0, max_train_images: int | None = 4000, model: TrainedModel | None = None) -> TrustRecord:
    """Fit (when missing or ``refit``) and score one run; writes and returns its ``trust.json`` record.
    ``model``: the checkpoint already loaded (``run.load_model()``), so it is read once."""
    from bloodcls.training.trust import write_trust

    model = model if model is not None else run.load_model()
    results = run.results
    fitted_now = model.trust is None or refit
    if fitted_now:
        state, report = fit_trust(model.net, arrays, max_train_images=max_train_images, seed=seed,
                                  class_names=model.class_names)
        if run.owns_checkpoint:
            write_trust(run.checkpoint, state)  # the run's own checkpoint: predict and the demo now use it
    else:
        state = model.trust
        report = evaluate_trust(model.net, state, arrays["test"], seed=seed, class_names=model.class_names)
    if results is not None and results.raw and fitted_now:  # results.json and its tracker summary carry it, as after training
        write_json(run.paths.results, {**results.raw, "trust": report, "summary": {**results.summary, **summary(report)}})
    test_x = torch.as_tensor(arrays["test"][0])
    pick = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(seed))[:shift_images].sort().values
    record = {
        "run": str(run.folder), "checkpoint": str(run.checkpoint),
        "experiment": (results.experiment if results else None) or model.name,
        "recipe": results.recipe if results else None, "seed": results.seed if results else None,
        "fitted_now": fitted_now, "report": report, "summary": summary(report),
        "shift_firing": {"n_images": len(pick), "severities": list(SEVERITIES),
                         "rates": shift_firing(model.net, state, test_x[pick], seed=seed)},
        "environment": environment("cpu"),
    }
    run.paths.trust_dir.mkdir(parents=True, exist_ok=True)
    write_json(run.paths.trust, record)
    reliability_diagram(report, run.paths.reliability, title=f"{record['experiment']} seed {record['seed']}")
    return TrustRecord.from_dict(record)


def trust_targets(targets: Sequence[str | Path], *, refit: bool = False, shift_images: int = 1000,
                  data_root: str | None = None, seed: int = 0, reuse: bool = False) -> list[TrustRecord]:
    """:func:`trust_run` over every run the targets name, one line each on stderr; with ``reuse`` (and no
    ``refit``) a run's existing trust.json is kept as it is."""
    records = []
    for run in FinishedRun.find(targets):
        if reuse and not refit and run.trust is not None:
            records.append(run.trust)
            continue
        model = run.load_model()
        arrays = run.load_splits(model.img_size, data_root)
        rec = trust_run(run, arrays, refit=refit, shift_images=shift_images, seed=seed, model=model)
        print(run_line(rec), file=sys.stderr, flush=True)
        records.append(rec)
    return records


def run_line(record: TrustRecord) -> str:
    """What the command prints per run: the headline scores, then the gate's warning where it has one."""
    s, report = record.summary, record.report
    gate, far = report["gate"], report["gate"]["far_ood"]["all"]
    away = far.get("turned_away", round(far["fires"] * far["n_ood"]))
    line = (f"{record.run}: accuracy {100 * report['test_acc']:.2f} % on all test images, "
            f"{100 * s['trust/acc_at_90']:.2f} % at 90 % coverage (AURC {100 * s['trust/aurc']:.2f} %); ECE "
            f"{100 * s['trust/ece_before']:.2f} -> {100 * s['trust/ece_after']:.2f} %; far-OOD AUROC "
            f"{s['trust/far_ood_auroc']:.4f}, {away} of {far['n_ood']} far-OOD images turned away; gate fires on "
            f"{100 * s['trust/gate_fires_on_test']:.1f} % of the test split")
    return f"{line}\n  WARNING: {gate['warning']}" if gate.get("warning") else line


ROWS = [("accuracy on all test images (%)", "trust/test_acc", 100),
        ("ECE before (%)", "trust/ece_before", 100), ("ECE after (%)", "trust/ece_after", 100),
        ("NLL before", "trust/nll_before", 1), ("NLL after", "trust/nll_after", 1),
        ("Brier before", "trust/brier_before", 1), ("Brier after", "trust/brier_after", 1),
        ("temperature", "trust/temperature", 1), ("AURC (%)", "trust/aurc", 100), ("AUGRC (%)", "trust/augrc", 100),
        ("acc at 90 % coverage (%)", "trust/acc_at_90", 100), ("acc at 95 % coverage (%)", "trust/acc_at_95", 100),
        ("coverage at the review threshold (%)", "trust/coverage", 100),
        ("far-OOD AUROC (%)", "trust/far_ood_auroc", 100), ("far-OOD FPR at 95 % TPR (%)", "trust/far_ood_fpr95", 100),
        ("far-OOD images turned away (%)", "trust/far_ood_turned_away", 100),
        ("gate fires on clean test (%)", "trust/gate_fires_on_test", 100)]


def _groups(records: Sequence[TrustRecord]) -> dict[str, list[TrustRecord]]:
    groups: dict[str, list[TrustRecord]] = defaultdict(list)
    for r in records:
        groups[f"{r.experiment} {r.recipe or ''}".strip()].append(r)
    return dict(groups)


def trust_table(records: Sequence[TrustRecord]) -> str:
    """Mean ± sample std over runs, one column per experiment (and recipe)."""
    groups = _groups(records)
    header = ["", *(f"{name} (n={len(rs)})" for name, rs in groups.items())]
    rows = [[label, *(format_mean_std([r.summary[key] for r in rs], scale=scale, digits=4 if scale == 1 else 2)
                      for rs in groups.values())] for label, key, scale in ROWS]
    weak = [f"- {r.run}: far-OOD AUROC {r.summary['trust/far_ood_auroc']:.4f}" for r in records
            if r.summary["trust/far_ood_auroc"] < MIN_FAR_OOD_AUROC]
    note = ["", f"WARNING: the gate of these runs scores a far-OOD AUROC below {MIN_FAR_OOD_AUROC} (refit with "
            "--refit):", *weak] if weak else []
    return "\n".join([*md_table(header, rows), *note])


def shift_table(records: Sequence[TrustRecord]) -> str:
    """Gate firing rate (%) on the shift suite's shifted test copies, mean ± std over runs, per group."""
    out = []
    for name, rs in _groups(records).items():
        rates = [r.shift_firing["rates"] for r in rs]
        header = [f"gate fires (%), {name} (n={len(rs)})", *(f"severity {s}" for s in SEVERITIES)]
        rows = [["clean test", format_mean_std([r["clean"][0] for r in rates], scale=100, digits=1),
                 *[""] * (len(SEVERITIES) - 1)]]
        shifts = [k for k in rates[0] if k != "clean"]
        rows += [[shift, *(format_mean_std([r[shift][i] for r in rates], scale=100, digits=1)
                           for i in range(len(SEVERITIES)))] for shift in shifts]
        rows.append(["mean over shifts", *(format_mean_std([sum(r[s][i] for s in shifts) / len(shifts) for r in rates],
                                                            scale=100, digits=1) for i in range(len(SEVERITIES)))])
        out.append("\n".join(md_table(header, rows)))
    return "\n\n".join(out)
