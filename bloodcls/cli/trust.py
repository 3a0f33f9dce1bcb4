"""``bloodcls trust``: calibration, abstention and the "not a blood-cell image" gate of trained runs.

    bloodcls trust <run, multirun folder or .ckpt>... [--refit] [--shift-images 1000] [--table] [--reuse]

Fits the trust state where a run's checkpoint lacks it (runs trained before it existed; written into the
run's own best.ckpt), scores it on the test split, on far-OOD images (natural photos, crops, plain
colours, noise) and on the shift suite's shifted test copies, and writes ``<run>/trust/trust.json`` and
``reliability.png``. ``--table`` prints mean ± std over runs per experiment and recipe.
Arguments only; the work is done by :mod:`bloodcls.analysis.trust_report`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bloodcls.cli import summary
from bloodcls.errors import UserError, report_user_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bloodcls trust", description=summary(__doc__))
    p.add_argument("targets", nargs="+", help="run folder(s), multirun folder(s) or .ckpt file(s)")
    p.add_argument("--refit", action="store_true", help="fit the state again even where the checkpoint has one")
    p.add_argument("--shift-images", type=int, default=1000, help="test images scored under each shift (default 1000)")
    p.add_argument("--data-root", help="folder with bloodmnist_<size>.npz (default: the run's data.root, else "
                   "~/.medmnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", action="store_true", help="print Markdown tables over the runs")
    p.add_argument("--reuse", action="store_true", help="keep a run's trust/trust.json where it has one "
                   "(no refit, no rescoring): tables over runs scored before")
    return p


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.shift_images < 1:
        raise UserError(f"--shift-images {args.shift_images}: give a whole number >= 1 (e.g. 1000).")
    from bloodcls.analysis.trust_report import shift_table, trust_table, trust_targets

    records = trust_targets(args.targets, refit=args.refit, shift_images=args.shift_images, data_root=args.data_root,
                            seed=args.seed, reuse=args.reuse)
    if args.table:
        print(trust_table(records))
        print()
        print(shift_table(records))
    return 0
