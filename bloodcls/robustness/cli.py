"""Shift suite: how far trained classifiers fall under lab variability (python -m bloodcls.robustness).

Arguments only; scoring the runs is :func:`bloodcls.robustness.runs.score_targets`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from bloodcls.errors import report_user_errors
from bloodcls.robustness.runs import DEFAULTS, score_targets
from bloodcls.robustness.shifts import SHIFTS
from bloodcls.robustness.tables import summary_table

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bloodcls.robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="+", help="run folder(s), multirun folder(s) or .ckpt file(s)")
    p.add_argument("--out", help="output folder (default <run>/robustness; with several runs, <out>/<run name>)")
    p.add_argument("--data-root", help="folder with bloodmnist_<size>.npz (default: the run's data.root, else "
                                       "~/.medmnist)")
    p.add_argument("--split", default=DEFAULTS["split"], choices=["test", "val"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--device", default=DEFAULTS["device"], help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--shifts", help=f"comma-separated subset of: {','.join(SHIFTS)}")
    p.add_argument("--severities", type=int, nargs="+", default=DEFAULTS["severities"])
    p.add_argument("--no-download", action="store_true", help="never try to download a missing data file")
    p.add_argument("--reuse", action="store_true",
                   help="keep an existing robustness.json scored with the same seed, split, shifts and severities")
    p.add_argument("--table", action="store_true", help="print Markdown summary tables grouped by experiment")
    p.add_argument("--examples", action="store_true",
                   help="also write shift_examples.png: one test image under every shift and severity")
    return p


@report_user_errors
def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    payloads = score_targets(args.targets, args)
    if args.table:
        print(summary_table(payloads))
    return payloads
