"""``bloodcls workspace``: the study's comparison workspace on W&B, built from code.

    bloodcls workspace --entity E --project P [--group SWEEP] [--name NAME] [--dry-run]

Arguments only; the work is done by :mod:`bloodcls.analysis.wandb_workspace`.
"""

from __future__ import annotations

import argparse
import json
import sys

from bloodcls.cli import summary
from bloodcls.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bloodcls workspace", description=summary(__doc__))
    parser.add_argument("--entity", required=True, help="W&B user or team that owns the project")
    parser.add_argument("--project", required=True, help="W&B project the runs are in (logger.wandb.project)")
    parser.add_argument("--group", help="only this sweep's runs (its W&B group: the sweep folder's name)")
    parser.add_argument("--name", help="the workspace's name (default: 'bloodcls comparison (<group>)')")
    parser.add_argument("--dry-run", action="store_true", help="print the workspace's spec as JSON; no network")
    args = parser.parse_args(argv)
    from bloodcls.analysis.wandb_workspace import build_workspace, save_workspace, workspace_spec

    try:
        workspace = build_workspace(args.entity, args.project, args.group, args.name)
        if args.dry_run:
            print(json.dumps(workspace_spec(workspace), indent=2))
            return 0
        print(f"workspace saved: {save_workspace(workspace)}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

