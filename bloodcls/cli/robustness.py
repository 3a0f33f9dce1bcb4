"""``bloodcls robustness``: how far trained classifiers fall under lab variability (the shift suite).

    bloodcls robustness <run, multirun folder or .ckpt>... [--shifts jpeg,noise] [--severities 1 5] [--table]

Arguments only; scoring the runs is :func:`bloodcls.robustness.scoring.score_targets`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence

from bloodcls.cli import summary
from bloodcls.errors import report_user_errors
from bloodcls.robustness.scoring import SuiteOptions, score_targets
from bloodcls.robustness.shifts import SHIFTS
from bloodcls.robustness.tables import summary_table


def build_parser() -> argparse.ArgumentParser:
    d = SuiteOptions()
    p = argparse.ArgumentParser(prog="bloodcls robustness", description=summary(__doc__))
    p.add_argument("targets", nargs="+", help="run folder(s), multirun folder(s) or .ckpt file(s)")
    p.add_argument("--out", help="output folder (default <run>/robustness; with several runs, <out>/<run name>)")
    p.add_argument("--data-root", help="folder with bloodmnist_<size>.npz (default: the run's data.root, else "
                                       "~/.medmnist)")
    p.add_argument("--split", default=d.split, choices=["test", "val"])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--device", default=d.device, help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--shifts", help=f"comma-separated subset of: {','.join(SHIFTS)}")
    p.add_argument("--severities", type=int, nargs="+", default=d.severities)
    p.add_argument("--no-download", action="store_true", help="never try to download a missing data file")
    p.add_argument("--reuse", action="store_true",
                   help="keep an existing robustness.json scored with the same seed, split, shifts and severities")
    p.add_argument("--table", action="store_true", help="print Markdown summary tables grouped by experiment")
    p.add_argument("--examples", action="store_true",
                   help="also write shift_examples.png: one test image under every shift and severity")
    return p


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = SuiteOptions(**{f.name: args[f.name] for f in dataclasses.fields(SuiteOptions)})
    records = score_targets(args["targets"], options)
    if args["table"]:
        print(summary_table(records))
    return 0
