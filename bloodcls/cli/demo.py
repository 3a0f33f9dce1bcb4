"""``bloodcls demo``: try a trained model in the browser: drop in a cell image, see the 8 probabilities, where the
model looked and whether to trust the answer.

    bloodcls demo <checkpoint or run folder> [--port 7860] [--host 127.0.0.1]
    make demo CKPT=outputs/runs/<date>/<time>_skip_s0_<id>

Arguments only; the work is done by :mod:`bloodcls.inference.app`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bloodcls.cli import MODEL_HELP, summary
from bloodcls.errors import UserError, report_user_errors
from bloodcls.inference.app import build_app, example_images, load_demo_model
from bloodcls.inference.classify import NO_TRUST
from bloodcls.inference.images import add_max_pixels_option


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodcls demo", description=summary(__doc__))
    p.add_argument("checkpoint", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--data-root", default=None, help="folder of the BloodMNIST files for example images "
                   "(default ~/.medmnist); none found: no examples")
    add_max_pixels_option(p)
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model = load_demo_model(args.checkpoint)
    examples_dir = Path(tempfile.mkdtemp(prefix="bloodcls_demo_"))
    model.examples = example_images(model.trained, args.data_root, examples_dir)
    app = build_app(model, max_pixels=args.max_pixels)
    print(f"bloodcls demo: {model.trained.hparams.get('arch') or model.trained.name} at {model.trained.img_size} px "
          f"on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    if model.trained.trust is None:  # said at start too, not only in the page
        print(f"note: {NO_TRUST}", file=sys.stderr, flush=True)
    try:
        app.launch(server_name=args.host, server_port=args.port, ssr_mode=False, quiet=True,
                   allowed_paths=[str(examples_dir)], footer_links=["api"])
    except OSError as err:
        raise UserError(f"Cannot serve on {args.host}:{args.port} ({err}). Pick a free port with --port N.") from None
    return 0

