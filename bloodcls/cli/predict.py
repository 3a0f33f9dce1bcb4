"""``bloodcls predict``: classify your own blood-cell images with a trained checkpoint.

    bloodcls predict <checkpoint> <image or folder>... [--json] [--tta]
    bloodcls predict outputs/runs/.../checkpoints/best.ckpt cell.jpg more_cells/

Arguments only; the work is done by :class:`bloodcls.inference.classifier.Classifier` (the Python API).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bloodcls.cli import MODEL_HELP
from bloodcls.errors import report_user_errors
from bloodcls.inference.classifier import Classifier
from bloodcls.inference.classify import format_text
from bloodcls.inference.images import add_max_pixels_option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bloodcls predict",
        description="Classify blood-cell images (PNG, JPEG, TIFF, BMP; any size or colour mode) with a trained checkpoint.",
    )
    parser.add_argument("checkpoint", help=MODEL_HELP)
    parser.add_argument("paths", nargs="+", help="image files and/or folders of images (not searched recursively)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips of each image")
    add_max_pixels_option(parser)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clf = Classifier.load(args.checkpoint)
    model = clf.model
    report = clf.report(args.paths, tta=args.tta, max_pixels=args.max_pixels)  # "adapted": null unless adapted
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        epoch = model.info.get("epoch")
        print(f"{model.name} model, {model.img_size} px input, {len(model.class_names)} classes "
              f"({model.path}{f', epoch {epoch}' if epoch is not None else ''}){', TTA x8' if args.tta else ''}",
              file=sys.stderr)
        if report["results"]:
            print(format_text(report))
        if not report["calibrated"]:
            print(f"note: {report['trust']['why']}", file=sys.stderr)
        if report["adapted"]:
            print(f"note: {report['adapted']['note']}", file=sys.stderr)
        for note in report["trust"].get("unavailable", []):
            print(f"note: {note}", file=sys.stderr)
    if report["skipped"]:
        names = ", ".join(Path(s["path"]).name for s in report["skipped"][:10])
        more = f" and {len(report['skipped']) - 10} more" if len(report["skipped"]) > 10 else ""
        print(f"skipped {len(report['skipped'])} folder entries that are not image files: {names}{more}", file=sys.stderr)
    for err in report["errors"]:
        print(f"error: {err['path']}: {err['error']}", file=sys.stderr)
    if report["errors"]:
        print(f"{len(report['results'])} image(s) classified, {len(report['errors'])} failed.", file=sys.stderr)
        return 1
    return 0

