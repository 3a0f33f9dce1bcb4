"""``bloodcls export``: a trained network for use outside this project, proved to compute the same thing.

    bloodcls export <checkpoint> --format onnx|torchscript|safetensors [--output PATH]

Arguments only; the work is done by :mod:`bloodcls.inference.exporters`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bloodcls.cli import MODEL_HELP
from bloodcls.errors import UserError, report_user_errors
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.exporters import ATOL, FORMATS, OPSET, export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bloodcls export",
                                     description="Export a trained bloodcls checkpoint to ONNX, TorchScript or safetensors.")
    parser.add_argument("checkpoint", help=MODEL_HELP)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write (default: beside the checkpoint, e.g. best.onnx)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--atol", type=float, default=ATOL, help=f"largest allowed output difference (default {ATOL:g})")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model = load_trained(args.checkpoint)
    output = args.output or model.path.with_name(model.path.name.rsplit(".", 1)[0] + FORMATS[args.format])
    if output.exists() and not args.force:
        raise UserError(f"{output} already exists and is never overwritten silently: pass --force to replace it, "
                        "or --output <path> to write elsewhere.")
    check = export(model, args.format, output, atol=args.atol, opset=args.opset)
    print(f"wrote {output} ({args.format}, {model.name}, {model.img_size} px input, classes: "
          f"{', '.join(model.class_names)})")
    if check["checked"]:
        print(f"matches PyTorch: max |difference| {check['max_abs_diff']:.2g} on {check['samples']} sample inputs "
              f"(tolerance {check['atol']:g})")
    else:
        print("not checked against PyTorch: onnxruntime is not installed (pip install onnxruntime, or "
              "`pip install -e .[export]`)")
    return 0

