"""``bloodcls publish``: keep a finished run's record in the repository, in the folder of its footing.

    bloodcls publish <run folder> results/<footing> [--force]
    bloodcls publish outputs/sweeps/<name> results/<footing>     # every completed run of a sweep; the rest skipped

Writes ``results/<footing>/<experiment>_s<seed>.json`` (scores, per-class scores, per-image test predictions,
epochs, commit, date, device; no checkpoints) and, with the footing's first record, its ``footing.json``. Refuses a
run that has not completed, a run whose recipe, precision or kind of device differs from the footing's, and a
record that exists with different content unless --force. Then ``bloodcls tables`` regenerates the tables.
Arguments only; the work is done by :mod:`bloodcls.analysis.published`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bloodcls.cli import summary
from bloodcls.errors import report_user_errors


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bloodcls publish", description=summary(__doc__))
    p.add_argument("run", type=Path, help="a finished run folder, or a sweep / multirun folder of runs")
    p.add_argument("footing", type=Path, help="the footing's folder under results/ (e.g. results/study-fp32-cpu)")
    p.add_argument("--force", action="store_true", help="replace a record that exists with different content")
    args = p.parse_args(argv)
    from bloodcls.analysis.published import publish_many

    done = publish_many(args.run, args.footing, force=args.force)
    for path, outcome in done:
        print(f"{outcome}: {path}")
    if any(outcome in ("written", "replaced") for _, outcome in done):
        print("Now regenerate the tables (bloodcls tables) and commit results/ with them.")
    return 0
