"""Continue an interrupted run in its own folder: ``python train.py resume=<run folder or .ckpt>``.

What is restored, and from where:

- the training state (epoch counter, weights, optimizer, LR scheduler, EarlyStopping, History) from
  the run's ``last.ckpt`` through Lightning's ``ckpt_path``;
- the config: :func:`resume_argv` replays the run's own overrides (``.hydra/overrides.yaml``)
  before the ones on the command line, so ``resume=<folder>`` alone rebuilds the same run;
- the folder: the ``resume_dir`` resolver (:mod:`bloodcls.config`) makes ``hydra.run.dir`` the run's
  folder, and Hydra saves the resumed invocation's config under ``.hydra-resume-<time>/`` so ``.hydra/``
  stays the original;
- the W&B run: its id is kept in ``status.json`` and passed back to the logger.

Lightning saves ``last.ckpt`` at the end of each training epoch, before it steps a
ReduceLROnPlateau scheduler for that epoch, and on resume neither replays that step nor honours an
early stop already decided; :class:`bloodcls.training.callbacks.ResumeLikeUninterrupted` does both, so a
resumed run continues exactly as the uninterrupted one.

Kept free of Lightning imports at module level: ``train.py`` calls :func:`resume_argv` before Hydra starts.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bloodcls.common.bundle import is_bundle
from bloodcls.common.rundir import (
    CHECKPOINT_DIR,
    HYDRA_SUBDIR,
    LAST_CKPT,
    RESULTS_FILE,
    STATUS_FILE,
    RunPaths,
    run_folder_of,
)
from bloodcls.config import override_key
from bloodcls.errors import UserError
from bloodcls.runs.status import COMPLETED, is_rank_zero, read_status, still_running

LAST = LAST_CKPT


class ResumeError(UserError):
    """``resume=`` does not point at something that can be continued."""


@dataclass
class ResumeTarget:
    checkpoint: Path
    run_dir: Path | None  # None: a checkpoint outside any run folder (continued in a new folder)


def checkpoint_to_continue(run_dir: Path) -> Path | None:
    """The checkpoint ``resume=<run folder>`` continues from: the one status.json names, else
    ``checkpoints/last.ckpt``; None when neither exists."""
    status = read_status(run_dir) or {}
    candidates = [Path(status["last_checkpoint"])] if status.get("last_checkpoint") else []
    candidates.append(run_dir / CHECKPOINT_DIR / LAST)
    return next((p for p in candidates if p.is_file()), None)


def resolve_resume(resume: str | Path) -> ResumeTarget:
    """Check what ``resume=`` names and find the checkpoint to continue from; a UserError says what is wrong."""
    path = Path(str(resume)).expanduser()
    if is_bundle(path):
        raise ResumeError(not_for_training(path, "resume"))
    if path.is_dir():
        checkpoint = checkpoint_to_continue(path)
        if checkpoint is None:
            hint = ("it stopped before finishing its first epoch, so there is nothing to continue: start it again "
                    "without resume=" if (path / STATUS_FILE).is_file() or (path / HYDRA_SUBDIR).is_dir()
                    else "it does not look like a run folder (outputs/runs/<date>/<time>_<name>_<id>)")
            raise ResumeError(f"resume={resume}: the folder has no checkpoints/{LAST}; {hint}.")
        run_dir: Path | None = path
    elif path.is_file():
        checkpoint, run_dir = path, run_folder_of(path)
    else:
        raise ResumeError(
            f"resume={resume}: no such run folder or checkpoint. Pass a run folder (outputs/runs/<date>/<time>_...) "
            "or a .ckpt file."
        )
    status = (read_status(run_dir) or {}) if run_dir is not None else {}
    pid = still_running(status) if is_rank_zero() else None  # DDP ranks > 0 start while rank 0 runs
    if pid is not None:
        raise ResumeError(
            f"resume={resume}: run {run_dir} is still running (process {pid} on this machine), and two processes "
            f"must never write one run folder. Stop it first (Ctrl-C or `kill -TERM {pid}`: it records itself as "
            "interrupted and keeps last.ckpt), then resume."
        )
    if status.get("status") == COMPLETED:
        raise ResumeError(
            f"resume={resume}: run {run_dir} already completed, so there is nothing to continue. To train it "
            f"longer, start a new run from its last state: `python train.py ckpt_path={checkpoint} "
            "trainer.max_epochs=<more>` (with the run's own overrides)."
        )
    return ResumeTarget(checkpoint=checkpoint, run_dir=run_dir)


def check_checkpoint(target: ResumeTarget) -> dict[str, Any]:
    """Load the checkpoint weights-only before Lightning does: refuse crafted or broken files clearly."""
    return _read_for_lightning(target.checkpoint, training=True, setting="resume")


def not_for_training(path: Path, setting: str) -> str:
    """The paragraph for a model bundle given to ``resume=`` or ``ckpt_path=``, which need a training checkpoint."""
    return (f"{setting}={path} is a model bundle (`bloodcls bundle`: the weights, config.json and a model card, "
            "without the optimizer, epoch counter and the rest of a training state), which predict, evaluate, "
            "calibrate, adapt, export, the demo and init_from= take. resume= and ckpt_path= continue or score a "
            "training run and need that run's .ckpt file: checkpoints/last.ckpt to train on, checkpoints/best.ckpt "
            "to score with train=false. To train further from the bundle's weights, start a new run with "
            f"init_from={path}.")


def check_ckpt_path(ckpt_path: Any, training: bool) -> Path | None:
    """``ckpt_path=`` read as ``resume=`` reads its checkpoint, before Lightning unpickles it: a missing, empty,
    unreadable or crafted file is one paragraph (exit 2), never Lightning's traceback. ``training``: the run
    continues from it (``trainer.fit``), so it must hold the training state; else it is only scored."""
    if ckpt_path in (None, ""):
        return None
    path = Path(str(ckpt_path)).expanduser()
    _read_for_lightning(path, training=training, setting="ckpt_path")
    return path


def _read_for_lightning(path: Path, training: bool, setting: str) -> dict[str, Any]:
    if is_bundle(path):  # before reading: the paragraph, whatever state the bundle is in
        raise ResumeError(not_for_training(path, setting))
    from bloodcls.common.checkpoints import read_checkpoint  # torch: not at import, train.py reads argv first

    contents = read_checkpoint(path)
    if contents.get("format") == "safetensors":
        raise ResumeError(f"{path} is an exported model (weights only), which predict, the demo and the shift suite "
                          "read; training and train=false scoring take the run's .ckpt file it was exported from.")
    if not isinstance(contents.get("state_dict"), dict):
        raise ResumeError(f"{path} holds no Lightning state_dict, so it is not a checkpoint of a bloodcls run. "
                          "Pick a run's checkpoints/best.ckpt (scoring) or last.ckpt (training on).")
    if training and ("optimizer_states" not in contents or "loops" not in contents):
        raise ResumeError(
            f"{path} holds weights but no training state (optimizer, epoch counter), so training "
            "cannot continue from it. Pick the run's checkpoints/last.ckpt, or score it with train=false."
        )
    return contents


# -- Hydra side (the run-folder resolvers are in bloodcls.config) ----------------------------
def _is_override(arg: str) -> bool:
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def resume_argv(argv: list[str]) -> list[str]:
    """``train.py`` arguments with the resumed run's own overrides put first (the command line's win).

    Without ``resume=``, or for a checkpoint outside a run folder, the arguments are unchanged.
    """
    given = [a for a in argv[1:] if _is_override(a) and override_key(a) == "resume"]
    if not given:
        return argv
    value = given[-1].split("=", 1)[1]
    if value in ("", "null", "None"):
        return argv
    if any(a in ("-m", "--multirun") for a in argv[1:]) or "," in value:
        raise ResumeError("resume= continues one run: run `python train.py resume=<run folder>` once per run, "
                          "without -m/--multirun.")
    target = resolve_resume(value)
    overrides_file = RunPaths(target.run_dir).hydra_overrides if target.run_dir is not None else None
    if overrides_file is None or not overrides_file.is_file():
        return argv
    original = [str(o) for o in OmegaConf.load(overrides_file)]
    new_keys = {override_key(a) for a in argv[1:] if _is_override(a)}
    replay = [o for o in original if override_key(o) not in new_keys | {"resume", "ckpt_path"}]
    return [argv[0], *replay, *argv[1:]]


# -- Lightning side --------------------------------------------------------------------------
def keep_csv_history(loggers: list[Any]) -> None:
    """Keep the rows a CSVLogger wrote before the interruption (it deletes ``metrics.csv`` on start)."""
    from lightning.pytorch.loggers import CSVLogger

    if not is_rank_zero():
        return
    for lg in loggers:
        if not isinstance(lg, CSVLogger):
            continue
        path = Path(lg.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        old = path.read_text()
        header = next(csv.reader(io.StringIO(old)), [])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            writer = lg.experiment  # creating the writer removes the file
        path.write_text(old)
        writer.metrics_keys = sorted(set(header))


# -- the run's folder ------------------------------------------------------------------------
def _holds_a_run(run_dir: Path) -> str | None:
    """What in ``run_dir`` shows that a run already used it (None: free to start a new run there)."""
    for name in (STATUS_FILE, RESULTS_FILE):
        if (run_dir / name).is_file():
            return name
    ckpts = sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt")) if (run_dir / CHECKPOINT_DIR).is_dir() else []
    return f"checkpoints/{ckpts[0].name}" if ckpts else None


def start_or_resume(resume: Any, output_dir: str | Path) -> ResumeTarget | None:
    """Validate ``resume=`` against the run folder; a fresh run never writes into a used folder.

    Returns the checkpoint to continue from (None for a fresh run). Raises a UserError before
    anything in the folder is touched.
    """
    output_dir = Path(output_dir)
    target = None if resume in (None, "") else resolve_resume(resume)
    if target is not None:
        check_checkpoint(target)
        if target.run_dir is not None:
            if target.run_dir.resolve() != output_dir.resolve():
                raise ResumeError(
                    f"resume={resume} continues run {target.run_dir} in its own folder, but this run writes to "
                    f"{output_dir}. Leave hydra.run.dir alone with resume= (train.py then picks the run's folder)."
                )
            # Continuing in its own checkpoints folder is the point: silence Lightning's "not empty" warning.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            return target
    used = _holds_a_run(output_dir) if is_rank_zero() else None  # DDP ranks > 0 join rank 0's folder
    if used is not None:
        raise UserError(
            f"{output_dir} already holds a run ({used} exists), and a new run never writes over another. Continue "
            f"that run with `python train.py resume={output_dir}`, or let train.py make a fresh folder (do not "
            "set hydra.run.dir to an existing run folder)."
        )
    return target
