"""Shift suite: how far trained classifiers fall under lab variability (python -m bloodcls.robustness).

Arguments only; scoring a run is :func:`bloodcls.robustness.runs.score_run`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bloodcls.errors import report_user_errors
from bloodcls.robustness.runs import reusable, score_run
from bloodcls.robustness.shifts import SEVERITIES, SHIFTS
from bloodcls.robustness.suite import JSON_FILE, OUT_DIR
from bloodcls.robustness.tables import summary_table
from bloodcls.runs.rundir import find_checkpoints

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bloodcls.robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="+", help="run folder(s), multirun folder(s) or .ckpt file(s)")
    p.add_argument("--out", help="output folder (default <run>/robustness; with several runs, <out>/<run name>)")
    p.add_argument("--data-root", help="folder with bloodmnist_<size>.npz (default: the run's data.root, else "
                                       "~/.medmnist)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--shifts", help=f"comma-separated subset of: {','.join(SHIFTS)}")
    p.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES))
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
    runs = find_checkpoints(args.targets)
    cache: dict = {}
    payloads = []
    for run, ckpt in runs:
        if args.out:
            out = Path(args.out) / run.name if len(runs) > 1 else Path(args.out)
        else:
            out = run / OUT_DIR
        payload = reusable(out / JSON_FILE, ckpt, args) if args.reuse else None
        if payload is None:
            payload = score_run(run, ckpt, out, args, cache)
        payloads.append(payload)
        print(f"{run.name}: clean acc {100 * payload['clean_acc']:.2f} %, mean under shift "
              f"{100 * payload['mean_acc']:.2f} % (drop {100 * payload['drop_acc']:.2f}), worst "
              f"{100 * payload['worst_acc']:.2f} % ({payload['worst']}), {payload['time_s']:.0f} s -> {out / JSON_FILE}",
              flush=True)
    if args.table:
        print(summary_table(payloads))
    return payloads
