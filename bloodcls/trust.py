"""Command line: calibration, abstention and the "not a blood-cell image" gate of trained runs.

    python -m bloodcls.trust <run or multirun folder or .ckpt>... [--refit] [--shift-images 1000] [--table] [--reuse]

Fits the trust state where a run's checkpoint lacks it (runs trained before it existed; written into the
run's own best.ckpt), scores it on the test split, on far-OOD images (natural photos, crops, plain
colours, noise) and on the shift suite's shifted test copies, and writes ``<run>/trust/trust.json`` and
``reliability.png``. ``--table`` prints mean ± std over runs per experiment and recipe.
Arguments only; the work is done by :mod:`bloodcls.analysis.trust`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from bloodcls.errors import report_user_errors


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bloodcls.trust", description=__doc__.split("\n\n")[0])
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
def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = _parser().parse_args(argv)
    from bloodcls.analysis.trust import JSON_FILE, OUT_DIR, shift_table, trust_run, trust_table
    from bloodcls.common.rundir import RESULTS_FILE, find_checkpoints, read_json
    from bloodcls.data.sources import run_splits
    from bloodcls.errors import UserError
    from bloodcls.inference.checkpoint import load_trained

    if args.shift_images < 1:
        raise UserError(f"--shift-images {args.shift_images}: give a whole number >= 1 (e.g. 1000).")
    records = []
    for run, ckpt in find_checkpoints(args.targets):
        kept = read_json(run / OUT_DIR / JSON_FILE) if args.reuse and not args.refit else None
        if kept:
            records.append(kept)
            continue
        model = load_trained(ckpt)
        size = model.img_size
        config = (read_json(run / RESULTS_FILE) or {}).get("config", {})
        arrays, _ = run_splits(run, config.get("data"), size, root=args.data_root, download=False)  # file or folder
        rec = trust_run(run, ckpt, arrays, refit=args.refit, shift_images=args.shift_images, seed=args.seed, model=model)
        s = rec["summary"]
        print(f"{run}: ECE {100 * s['trust/ece_before']:.2f} -> {100 * s['trust/ece_after']:.2f} %, AURC "
              f"{100 * s['trust/aurc']:.2f} %, acc@90 {100 * s['trust/acc_at_90']:.2f} %, far-OOD AUROC "
              f"{s['trust/far_ood_auroc']:.4f}, gate fires on {100 * s['trust/gate_fires_on_test']:.1f} % of the test split",
              file=sys.stderr, flush=True)
        records.append(rec)
    if args.table:
        print(trust_table(records))
        print()
        print(shift_table(records))
    return records


if __name__ == "__main__":
    main()
