"""``bloodcls evaluate``: score a trained model on a lab's labelled images (a folder of class folders or a CSV).

    bloodcls evaluate <checkpoint> <folder or csv> [--json] [--out <folder>] [--classes <map.yaml>] [--batch-size N]

Accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix, calibration and how often the review
threshold and the not-a-cell gate fire, over the images of the classes the model knows (the others are counted
apart). Writes report.json, predictions.csv and confusion.png to --out (default <run>/evaluate/<data name>).
Arguments only; the work is done by :mod:`bloodcls.analysis.evaluate_report`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bloodcls.cli import MODEL_HELP, check_batch_size, summary
from bloodcls.errors import report_user_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodcls evaluate", description=summary(__doc__))
    p.add_argument("checkpoint", help=MODEL_HELP)
    p.add_argument("data", help="a folder of class folders (<folder>/<class>/<image>) or a CSV with path,label columns")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON (nothing else on stdout)")
    p.add_argument("--out", help="folder for report.json, predictions.csv and confusion.png (default: "
                   "<run>/evaluate/<data name> for a run's checkpoint, else ./evaluate/<data name>)")
    p.add_argument("--classes", help="YAML map of folder class -> model class, one per line (e.g. "
                   "`ig: immature_granulocytes`) for names that do not match by themselves")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    return p


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_batch_size(args.batch_size)
    from bloodcls.analysis.evaluate_report import format_text, run_evaluation

    evaluation, _ = run_evaluation(args.checkpoint, args.data, class_map=args.classes, batch_size=args.batch_size,
                                   out=args.out)
    if evaluation.report.get("calibrated_on_overlap"):
        print(evaluation.report["calibrated_on_overlap"], file=sys.stderr)
    if args.json:
        print(json.dumps({**evaluation.report, "predictions": evaluation.rows}, indent=2))
    else:
        print(format_text(evaluation.report))
    if args.json and not evaluation.report["trust"]["available"]:
        print(f"note: {evaluation.report['trust']['why']}", file=sys.stderr)
    return 0
