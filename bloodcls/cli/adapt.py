"""``bloodcls adapt``: adapt a trained model to a lab's unlabelled images (BatchNorm statistics recomputed).

    bloodcls adapt <checkpoint> <folder or csv> --out <adapted.ckpt or bundle folder> [--force] [--json]

Recomputes the BatchNorm statistics on the lab's images (no label needed; class folders and label columns are
ignored), checks with the not-a-cell gate that they are blood cells, and writes a copy of the checkpoint that
records what it was adapted on (weights unchanged): a .ckpt file, or with ``--out <folder>`` a model bundle
(``bloodcls bundle``'s folder, its card made from the records of the run the model came from). Its temperature
and review thresholds are then unverified and its prediction sets removed: refit them with ``bloodcls calibrate``
on labelled images of the lab. The work is done by :mod:`bloodcls.inference.adaptation`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bloodcls.cli import MODEL_HELP, check_batch_size, summary
from bloodcls.errors import report_user_errors
from bloodcls.inference.images import add_max_pixels_option


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodcls adapt", description=summary(__doc__))
    p.add_argument("checkpoint", help=MODEL_HELP)
    p.add_argument("data", help="the lab's unlabelled images: a folder (flat or in class folders) or a CSV with a "
                   "path column")
    p.add_argument("--out", required=True, help="the adapted model to write: a new .ckpt file, or a new or empty "
                   "folder (a name without a suffix) written as a model bundle")
    p.add_argument("--force", action="store_true", help="write the model even if the gate turns away most of the "
                   "images (the warning is recorded in the model)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    p.add_argument("--json", action="store_true", help="print the record written into the model as JSON")
    add_max_pixels_option(p)
    return p


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_batch_size(args.batch_size)
    from bloodcls.data.folder import listing
    from bloodcls.data.unlabelled import load_unlabelled
    from bloodcls.inference.adaptation import adapt_model, check_output, write_adapted
    from bloodcls.inference.checkpoint import load_trained

    _, out = check_output(args.checkpoint, args.out)  # before the (slower) model and images
    model = load_trained(args.checkpoint)
    data = load_unlabelled(args.data, model.img_size, max_pixels=args.max_pixels)
    if data.skipped:
        print(f"skipped {len(data.skipped)} files that are not readable images: "
              f"{listing([f'{p} ({why})' for p, why in data.skipped])}", file=sys.stderr)
    adapted = adapt_model(model, data, force=args.force, batch_size=args.batch_size)
    if out.suffix == ".ckpt":
        write_adapted(model.path, out, adapted)
    else:
        from bloodcls.inference.classifier import Classifier

        Classifier(adapted.model).save(out, by="bloodcls adapt")  # records: the run (or bundle) it came from
    r = adapted.record
    if args.json:
        print(json.dumps({**r, "out": args.out}, indent=2))
        return 0
    print(f"adapted {args.checkpoint} to {r['images']} images of {r['data']}: the statistics of its "
          f"{r['batchnorm_layers']} BatchNorm layers recomputed, every weight unchanged; "
          f"{100 * r['predictions_changed']:.1f} % of these images change class")
    if r["gate"]:
        print(f"not-a-cell gate (training statistics) accepts {100 * r['gate']['accepts']:.1f} % of these images "
              f"after adaptation ({100 * r['gate']['accepts_before']:.1f} % before)")
    if r["warning"]:
        print(f"warning: {r['warning']} (written because of --force; recorded in the model)", file=sys.stderr)
    print(f"trust state: gate kept; temperature and review thresholds kept but unverified; prediction sets removed. "
          f"Refit them on labelled images of this lab: bloodcls calibrate {args.out} <labelled folder> "
          "--out <new.ckpt or folder>")
    print(f"written: {args.out}")
    return 0
