"""What a run folder holds, by name, and the two ways it is read and written (one home for both).

    <run>/results.json        scores, efficiency, history, environment (bloodcls.training.fit)
    <run>/status.json         running / completed / failed / interrupted (bloodcls.runs.status)
    <run>/checkpoints/        best.ckpt (scored), last.ckpt (resume)
    <run>/robustness/         the shift suite's robustness.json and figures (bloodcls.robustness)
    <run>/.hydra/             the composed config and overrides (Hydra)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bloodcls.common.files import atomic_write
from bloodcls.errors import UserError

RESULTS_FILE = "results.json"
STATUS_FILE = "status.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CKPT = "best.ckpt"
LAST_CKPT = "last.ckpt"
ROBUSTNESS_DIR = "robustness"
HYDRA_SUBDIR = ".hydra"


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the target), so a killed job never leaves half a file."""
    text = json.dumps(payload, indent=2, default=str)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` next to ``<run>/.hydra`` or
    ``<run>/status.json``), else None: the one home of checkpoint -> run folder."""
    checkpoint = Path(checkpoint)
    run = checkpoint.parent.parent
    if checkpoint.parent.name == CHECKPOINT_DIR and ((run / HYDRA_SUBDIR).is_dir() or (run / STATUS_FILE).is_file()):
        return run
    return None


def run_checkpoint(run: str | Path) -> Path | None:
    """The checkpoint that represents a run: best.ckpt, else last.ckpt, else None."""
    for name in (BEST_CKPT, LAST_CKPT):
        path = Path(run) / CHECKPOINT_DIR / name
        if path.is_file():
            return path
    return None


def find_checkpoints(targets: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """``(run folder, checkpoint)`` per target: a .ckpt file, a run folder, or a multirun folder of runs."""
    found: list[tuple[Path, Path]] = []
    for target in map(Path, targets):
        if target.is_file():
            run = target.parent.parent if target.parent.name == CHECKPOINT_DIR else target.parent
            found.append((run, target))
        elif target.is_dir():
            ckpt = run_checkpoint(target)
            if ckpt is not None:
                found.append((target, ckpt))
                continue
            runs = [(d, c) for d in sorted(p for p in target.iterdir() if p.is_dir())
                    if (c := run_checkpoint(d)) is not None]
            if not runs:
                raise UserError(f"{target} holds no checkpoints: expected a run folder with checkpoints/best.ckpt "
                                "(or last.ckpt), a multirun folder of such runs, or a .ckpt file.")
            found.extend(runs)
        else:
            raise UserError(f"{target} does not exist: pass a run folder (outputs/runs/...), a multirun folder or a "
                            ".ckpt file.")
    return found
