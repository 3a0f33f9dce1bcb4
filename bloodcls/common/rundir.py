"""What a run folder holds, by name, and the two ways it is read and written: the one module that spells the
names of a run folder's files (writers and readers take them, or :class:`RunPaths`, from here).

    <run>/results.json                  scores, efficiency, history, environment (bloodcls.training.fit)
    <run>/status.json                   running / completed / failed / interrupted (bloodcls.runs.status)
    <run>/checkpoints/                  best.ckpt (scored), last.ckpt (resume)
    <run>/split.csv                     data=folder: which image is in which split (bloodcls.data.splits), read back by resume=
    <run>/robustness/                   robustness.json, robustness.png, shift_examples.png (the shift suite)
    <run>/trust/                        trust.json (the trust report), reliability.png (training and the report)
    <run>/evaluate/<data>/              report.json, predictions.csv, confusion.png (bloodcls evaluate on a lab's images)
    <run>/.hydra/                       config.yaml, overrides.yaml (Hydra)

Opening a run folder to read it is :class:`bloodcls.inference.finished_run.FinishedRun`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloodcls.common.files import atomic_write
from bloodcls.errors import UserError

RESULTS_FILE = "results.json"
STATUS_FILE = "status.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CKPT = "best.ckpt"
LAST_CKPT = "last.ckpt"
SPLIT_FILE = "split.csv"
HYDRA_SUBDIR = ".hydra"
HYDRA_CONFIG = "config.yaml"
HYDRA_RESUME_PREFIX = f"{HYDRA_SUBDIR}-resume-"  # + time: the config Hydra saves for each resume=
HYDRA_OVERRIDES = "overrides.yaml"
ROBUSTNESS_DIR = "robustness"
ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_PNG = "robustness.png"
SHIFT_EXAMPLES_PNG = "shift_examples.png"
TRUST_DIR = "trust"
TRUST_JSON = "trust.json"
RELIABILITY_PNG = "reliability.png"
EVALUATE_DIR = "evaluate"
EVALUATE_JSON = "report.json"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_PNG = "confusion.png"


@dataclass(frozen=True)
class SuiteFiles:
    """The shift suite's files in one folder: ``<run>/robustness``, or the folder ``--out`` names."""

    folder: Path

    @property
    def record(self) -> Path:
        return self.folder / ROBUSTNESS_JSON

    @property
    def figure(self) -> Path:
        return self.folder / ROBUSTNESS_PNG

    @property
    def examples(self) -> Path:
        return self.folder / SHIFT_EXAMPLES_PNG


@dataclass(frozen=True)
class EvaluationFiles:
    """``bloodcls evaluate``'s files in one folder: ``<run>/evaluate/<data>``, or the folder ``--out`` names."""

    folder: Path

    @property
    def report(self) -> Path:
        return self.folder / EVALUATE_JSON

    @property
    def predictions(self) -> Path:
        return self.folder / PREDICTIONS_CSV

    @property
    def confusion(self) -> Path:
        return self.folder / CONFUSION_PNG


@dataclass(frozen=True)
class RunPaths:
    """Where each file of one run folder lies."""

    folder: Path

    @property
    def results(self) -> Path:
        return self.folder / RESULTS_FILE

    @property
    def status(self) -> Path:
        return self.folder / STATUS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINT_DIR

    @property
    def hydra_config(self) -> Path:
        return self.folder / HYDRA_SUBDIR / HYDRA_CONFIG

    @property
    def start_configs(self) -> list[Path]:
        """The config Hydra saved for each start of the run, in order: ``.hydra/``, then each resume's."""
        return [self.hydra_config, *sorted(self.folder.glob(f"{HYDRA_RESUME_PREFIX}*/{HYDRA_CONFIG}"))]

    @property
    def hydra_overrides(self) -> Path:
        """The overrides Hydra saved for the run (a sweep job's identity: experiment=, seed=, data.fold=)."""
        return self.folder / HYDRA_SUBDIR / HYDRA_OVERRIDES

    @property
    def robustness(self) -> SuiteFiles:
        return SuiteFiles(self.folder / ROBUSTNESS_DIR)

    @property
    def trust_dir(self) -> Path:
        return self.folder / TRUST_DIR

    @property
    def trust(self) -> Path:
        """The trust report's record (``bloodcls trust``)."""
        return self.trust_dir / TRUST_JSON

    @property
    def reliability(self) -> Path:
        """The reliability diagram, before and after temperature scaling (training, or ``bloodcls trust``)."""
        return self.trust_dir / RELIABILITY_PNG

    def evaluation(self, data_name: str) -> EvaluationFiles:
        """Where ``bloodcls evaluate`` writes the scores of this run's model on the labelled images ``data_name``."""
        return EvaluationFiles(self.folder / EVALUATE_DIR / data_name)

    def job_logs(self) -> list[Path]:
        """Hydra's job log (``<task>.log``) of the run, if any."""
        return sorted(self.folder.glob("*.log"))


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


def run_folder_of(checkpoint: str | Path, strict: bool = True) -> Path | None:
    """The run folder a checkpoint belongs to: the one home of checkpoint -> run folder.

    ``<run>/checkpoints/x.ckpt`` gives ``<run>`` when it shows it is a run (``.hydra/`` or ``status.json``), else
    None (``resume=`` then continues in a new folder). ``strict=False``: ``<run>`` whatever it holds, and for a
    checkpoint outside a ``checkpoints/`` folder the folder it lies in (where the suite writes its records).
    """
    checkpoint = Path(checkpoint)
    in_checkpoints = checkpoint.parent.name == CHECKPOINT_DIR
    run = checkpoint.parent.parent if in_checkpoints else checkpoint.parent
    if not strict:
        return run
    if in_checkpoints and ((run / HYDRA_SUBDIR).is_dir() or (run / STATUS_FILE).is_file()):
        return run
    return None


def job_folders(folder: str | Path) -> list[Path]:
    """The run folders directly inside a multirun or sweep folder, by name (hidden folders, e.g. a launcher's
    ``.submitit/``, are none): the one walker over a folder of runs."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def result_folders(folders: Sequence[str | Path]) -> list[Path]:
    """Every folder holding a results.json anywhere under ``folders`` (hidden folders aside, as in
    :func:`job_folders`), each once, in the order found."""
    seen: set[Path] = set()
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob(RESULTS_FILE)):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts[:-1])
            if not hidden and path.parent.resolve() not in seen:
                seen.add(path.parent.resolve())
                found.append(path.parent)
    return found


def run_checkpoint(run: str | Path) -> Path | None:
    """The checkpoint that represents a run: best.ckpt, else last.ckpt, else None."""
    for name in (BEST_CKPT, LAST_CKPT):
        path = RunPaths(Path(run)).checkpoints / name
        if path.is_file():
            return path
    return None


def find_checkpoints(targets: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """``(run folder, checkpoint)`` per target: a .ckpt file, a run folder, or a multirun folder of runs."""
    found: list[tuple[Path, Path]] = []
    for target in map(Path, targets):
        if target.is_file():
            found.append((run_folder_of(target, strict=False), target))
        elif target.is_dir():
            ckpt = run_checkpoint(target)
            if ckpt is not None:
                found.append((target, ckpt))
                continue
            runs = [(d, c) for d in job_folders(target) if (c := run_checkpoint(d)) is not None]
            if not runs:
                raise UserError(f"{target} holds no checkpoints: expected a run folder with checkpoints/best.ckpt "
                                "(or last.ckpt), a multirun folder of such runs, or a .ckpt file.")
            found.extend(runs)
        else:
            raise UserError(f"{target} does not exist: pass a run folder (outputs/runs/...), a multirun folder or a "
                            ".ckpt file.")
    return found
