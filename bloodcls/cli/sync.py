"""``bloodcls sync``: upload a sweep's offline W&B runs from a machine with internet (e.g. a cluster's login node).

    bloodcls sync outputs/sweeps/<name> [--jobs N] [--entity E] [--project P] [--include-synced]

Arguments only; the work is done by :mod:`bloodcls.runs.wandb_sync`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloodcls.cli import summary
from bloodcls.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bloodcls sync", description=summary(__doc__))
    parser.add_argument("folder", type=Path, help="a sweep folder (or any folder holding run folders)")
    parser.add_argument("--jobs", type=int, default=4, help="runs uploaded at a time (default 4)")
    parser.add_argument("--entity", help="upload to this W&B user or team instead of the runs' own")
    parser.add_argument("--project", help="upload to this W&B project instead of the runs' own")
    parser.add_argument("--include-synced", action="store_true", help="upload runs already synced again")
    args = parser.parse_args(argv)
    from bloodcls.runs.wandb_sync import offline_runs, sync_runs
    from bloodcls.training.loggers import WANDB_HOST, has_api_key, reachable

    try:
        if args.jobs < 1:
            raise UserError(f"--jobs {args.jobs}: give the number of runs to upload at a time (1 or more).")
        runs = offline_runs(args.folder, args.include_synced)
        if not runs:
            raise UserError(f"No offline W&B run to upload under {args.folder} (no wandb/offline-run-* folder"
                            f"{'' if args.include_synced else ' that is not synced yet; --include-synced uploads those again'}). "
                            "Runs trained with logger=wandb on a machine without internet leave them in their run folders.")
        if not has_api_key():
            raise UserError("Uploading needs a W&B API key, and none is set: run `wandb login` (or set "
                            "WANDB_API_KEY) on this machine, then run this again.")
        if not reachable():
            raise UserError(f"Cannot reach {WANDB_HOST}: run this on a machine with internet (e.g. the cluster's "
                            "login node), where the sweep folder is visible too.")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"uploading {len(runs)} offline run(s), {min(args.jobs, len(runs))} at a time", flush=True)
    results = sync_runs(runs, args.jobs, args.entity, args.project)
    for r in results:
        print(f"  {'synced' if r.ok else 'FAILED'}  {r.run.relative_to(args.folder)}{'' if r.ok else f': {r.message}'}")
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} synced, {len(failed)} failed"
          + (" (run the command again: synced runs are skipped)" if failed else ""))
    return 1 if failed else 0

