"""``bloodcls bundle``: write a folder that is the model: weights, config.json and a model card from the run's records.

    bloodcls bundle <run folder, checkpoint or bundle> <folder> [--onnx] [--force] [--push <user/repo>]

The folder (the Hugging Face Hub's layout) holds ``model.safetensors`` (the safetensors export, no pickle),
``config.json`` (architecture, classes, input preparation, trust state, adaptation, the run's records: readable
without bloodcls), ``README.md`` (the model card) and, with ``--onnx``, ``model.onnx``. Every command that takes a
model takes the folder, and so does ``Classifier.load``. Arguments only; the work is done by
:class:`bloodcls.inference.classifier.Classifier`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from bloodcls.cli import MODEL_HELP, summary
from bloodcls.errors import UserError, report_user_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodcls bundle", description=summary(__doc__))
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("folder", help="the bundle folder to write (new or empty; an existing bundle with --force)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (checked against PyTorch)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle in the folder")
    p.add_argument("--push", metavar="REPO_ID", default=None,
                   help="also upload the bundle (weights, config, card) to this Hugging Face Hub model repository "
                        "(needs `hf auth login`; model.onnx stays local)")
    p.add_argument("--private", action="store_true", help="with --push: create the repository private")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    return p


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.private and not args.push:
        raise UserError("--private applies to the repository --push creates: give --push <user/repo> with it.")
    from bloodcls.inference.classifier import Classifier

    clf = Classifier.load(args.model)
    folder = clf.save(args.folder, onnx=args.onnx, force=args.force, by="bloodcls bundle")
    written = {"folder": str(folder), "files": sorted(p.name for p in folder.iterdir()), "model": str(clf.path),
               "records": (clf.records or {}).get("source"), "adapted": bool(clf.adapted_on), "pushed": None}
    if args.push:
        written["pushed"] = str(clf.push_to_hub(args.push, private=args.private or None))
    if args.json:
        print(json.dumps(written, indent=2))
        return 0
    print(f"wrote {folder}: {', '.join(written['files'])} ({clf.model.name}, {clf.img_size} px, "
          f"{len(clf.class_names)} classes)")
    print(f"model card generated from the records of {written['records']}" if written["records"] else
          "note: no run records were found for this model (no results.json beside it), so its model card says its "
          "scores are unknown; bundle the run folder, or its checkpoints/best.ckpt, to include them")
    if clf.adapted_on:
        print("note: the model is adapted to one lab; its card says so")
    if written["pushed"]:
        print(f"pushed to the Hub: {written['pushed']}")
    return 0
