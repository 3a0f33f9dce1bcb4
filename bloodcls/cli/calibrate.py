"""``bloodcls calibrate``: re-calibrate a trained model to a lab's labelled images, without retraining.

    bloodcls calibrate <checkpoint> <folder or csv> --out <new.ckpt or folder> [--coverage 0.9] [--per-class]
                       [--holdout 0.5 [--seed 0]] [--method lac|aps|raps] [--classes <map.yaml>] [--json]

Refits, on the given images of the classes the model knows, the temperature, the review thresholds, the not-a-cell
gate's threshold and the conformal prediction sets (single view and TTA; one threshold per class with
``--per-class``), and writes them into a copy of the checkpoint (weights unchanged): a .ckpt file, or with
``--out <folder>`` a model bundle. ``--holdout 0.5`` keeps a seeded, class-stratified half apart and scores every
figure on it; without it the figures are in-sample and say so. The work is done by
:mod:`bloodcls.inference.recalibration`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from bloodcls.cli import MODEL_HELP, summary
from bloodcls.errors import report_user_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodcls calibrate", description=summary(__doc__))
    p.add_argument("checkpoint", help=MODEL_HELP)
    p.add_argument("data", help="a folder of class folders (<folder>/<class>/<image>) or a CSV with path,label columns")
    p.add_argument("--out", required=True, help="the re-calibrated model to write: a new .ckpt file, or a new or "
                   "empty folder (a name without a suffix) written as a model bundle")
    p.add_argument("--coverage", type=float, default=0.9, help="share of images whose prediction set holds the "
                   "true class (default 0.9)")
    p.add_argument("--per-class", action="store_true", help="one set threshold per class (class-conditional): "
                   "every class, the rarest included, gets the coverage; each class needs enough images (9 at 0.9)")
    p.add_argument("--holdout", type=float, help="share of the images kept apart (stratified by class, seeded) to "
                   "score the re-calibration on, e.g. 0.5; without it the figures printed are in-sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the --holdout split (default 0)")
    p.add_argument("--method", choices=("lac", "aps", "raps"), help="the set score (default: the one chosen on "
                   "evidence, lac, TorchCP's LAC/THR: docs/results/prediction-sets.md; aps and raps are randomised "
                   "per image)")
    p.add_argument("--classes", help="YAML map of folder class -> model class (e.g. `ig: immature_granulocytes`)")
    p.add_argument("--json", action="store_true", help="print the before/after report as JSON")
    return p


def _line(name: str, s: dict) -> str:
    sets, gate, review = s["sets"], s["gate"], s["review"]
    told = (f", sets hold the true class for {100 * sets['coverage']:.1f} % of the {sets['images']} images the gate "
            f"accepts ({sets['mean_size']:.2f} classes on average, worst class "
            f"{100 * sets['worst_class_coverage']:.1f} %)") if sets and sets["coverage"] is not None else ", no prediction sets"
    return (f"{name}: temperature {s['temperature']:.3f}, ECE {100 * s['calibration']['ece']:.2f} %, review fires on "
            f"{100 * review['share']:.1f} %, gate fires on {100 * gate['share']:.1f} % (turns away "
            f"{100 * gate['far_ood_turned_away']:.1f} % of non-cell images){told}")


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bloodcls.inference.recalibration import check_holdout, check_output
    from bloodcls.uncertainty.conformal import SetOptions

    method = {"method": args.method} if args.method else {}  # None: SetOptions' default, the one home of it
    sets = SetOptions(coverage=args.coverage, per_class=args.per_class, **method)  # before the slow part
    check_holdout(args.holdout)
    _, out = check_output(args.checkpoint, args.out)
    from bloodcls.data.class_names import load_class_map
    from bloodcls.data.labelled import load_labelled
    from bloodcls.inference.checkpoint import load_trained
    from bloodcls.inference.recalibration import recalibrate, write_recalibrated

    model = load_trained(args.checkpoint)
    data = load_labelled(args.data, model.class_names, model.img_size, load_class_map(args.classes))
    fitted = recalibrate(model, data, sets, holdout=args.holdout, seed=args.seed)
    if out.suffix == ".ckpt":
        write_recalibrated(model.path, out, fitted.state)
    else:
        from dataclasses import replace

        from bloodcls.inference.classifier import Classifier

        Classifier(replace(model, trust=fitted.state)).save(out, by="bloodcls calibrate")  # records: its run (or bundle)
    r = fitted.report
    if args.json:
        print(json.dumps({**r, "out": args.out}, indent=2))
        return 0
    unknown = f" ({sum(r['unknown'].values())} images of classes the model does not know left out)" if r["unknown"] else ""
    print(f"re-calibrated {args.checkpoint} on {r['fitted_on']} of the {r['images']} images of {r['data']}{unknown}")
    where = (f"on the {r['scored_on']} images held out (--holdout {r['holdout']:g}, seed {r['seed']})"
             if not r["in_sample"] else f"({r['note']})")
    print(f"scored {where}:")
    print(_line("before", r["before"]))
    print(_line("after ", r["after"]))
    for warning in r["warnings"]:
        print(f"warning: {warning}")
    print(f"written: {args.out}")
    return 0
