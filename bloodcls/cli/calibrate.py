"""``bloodcls calibrate``: re-calibrate a trained model to a lab's labelled images, without retraining.

    bloodcls calibrate <checkpoint> <folder or csv> --out <new.ckpt> [--coverage 0.9] [--classes <map.yaml>]

Refits, on every given image of a class the model knows, the temperature, the review thresholds, the not-a-cell
gate's threshold and the conformal threshold of the prediction sets, and writes them into a copy of the
checkpoint (weights unchanged). Keep some labelled images apart and score the new checkpoint on them with
``bloodcls evaluate``. The work is done by :mod:`bloodcls.inference.recalibration`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from bloodcls.cli import summary
from bloodcls.errors import report_user_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodcls calibrate", description=summary(__doc__))
    p.add_argument("checkpoint", help="a .ckpt from a run folder (checkpoints/best.ckpt)")
    p.add_argument("data", help="a folder of class folders (<folder>/<class>/<image>) or a CSV with path,label columns")
    p.add_argument("--out", required=True, help="the re-calibrated checkpoint to write (a new .ckpt file)")
    p.add_argument("--coverage", type=float, default=0.9, help="share of images whose prediction set holds the "
                   "true class (default 0.9)")
    p.add_argument("--method", choices=("lac", "aps", "raps"), default="aps", help="conformal score (default aps)")
    p.add_argument("--classes", help="YAML map of folder class -> model class (e.g. `ig: immature_granulocytes`)")
    p.add_argument("--json", action="store_true", help="print the before/after report as JSON")
    return p


def _line(name: str, s: dict) -> str:
    sets = s["sets"]
    told = (f", sets hold the true class for {100 * sets['coverage']:.1f} % ({sets['mean_size']:.2f} classes on "
            "average)") if sets else ", no prediction sets"
    return (f"{name}: temperature {s['temperature']:.3f}, ECE {100 * s['calibration']['ece']:.2f} %, review fires on "
            f"{100 * s['review_fires']:.1f} %, gate fires on {100 * s['gate_fires']:.1f} % (turns away "
            f"{100 * s['far_ood_turned_away']:.1f} % of non-cell images){told}")


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bloodcls.uncertainty.conformal import check_coverage

    check_coverage(args.coverage)  # before the (slower) checkpoint and images
    from bloodcls.data.class_names import load_class_map
    from bloodcls.data.labelled import load_labelled
    from bloodcls.inference.checkpoint import load_trained
    from bloodcls.inference.recalibration import recalibrate, write_recalibrated

    model = load_trained(args.checkpoint)
    data = load_labelled(args.data, model.class_names, model.img_size, load_class_map(args.classes))
    fitted = recalibrate(model, data, coverage=args.coverage, method=args.method)
    write_recalibrated(Path(args.checkpoint), Path(args.out), fitted.state)
    r = fitted.report
    if args.json:
        print(json.dumps({**r, "out": args.out}, indent=2))
        return 0
    unknown = f" ({sum(r['unknown'].values())} images of classes the model does not know left out)" if r["unknown"] else ""
    print(f"re-calibrated {args.checkpoint} on {r['images']} images of {r['data']}{unknown}")
    print(_line("before", r["before"]))
    print(_line("after ", r["after"]) + " (on the images it was fitted on: score held-out ones with bloodcls evaluate)")
    print(f"written: {args.out}")
    return 0
