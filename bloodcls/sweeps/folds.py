"""``python sweep.py folds=K data=folder data.path=<dir>``: k-fold cross-validation as a sweep.

Every (experiment, seed) runs once per fold: ``data.folds=K data.fold=0..K-1`` (bloodcls.data.splits keeps the
test hold-out fixed and makes fold ``i`` validation), each run named ``<experiment>_f<fold>_s<seed>``. The fold is
part of a job's identity wherever a sweep's jobs are keyed: it is read back from the job's ``data.fold=`` override
(the list of folds a plan runs, :func:`bloodcls.common.sweepdir.fold_list`, is shared with the report).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from bloodcls.config import override_key
from bloodcls.errors import UserError

FOLDER_TARGET = "bloodcls.data.FolderDataModule"
FOLD_RUN_NAME = "${experiment_name}_f${data.fold}_s${seed}"


def fold_overrides(folds: int | None, fold: int | str | None) -> list[str]:
    """The training overrides of one fold (``fold`` may be Hydra's sweep ``0,1,2``); none without folds."""
    if not folds:
        return []
    return [f"data.folds={folds}", f"data.fold={fold}", f"run_name={FOLD_RUN_NAME}"]


def all_folds(folds: int | None) -> list[str]:
    """The multirun overrides that sweep every fold."""
    return fold_overrides(folds, ",".join(str(f) for f in range(folds))) if folds else []


def check_folds(folds: Any, overrides: list[str]) -> int | None:
    """``folds``, checked: a whole number >= 2 and not set twice by ``data.folds=``/``data.fold=`` overrides."""
    if folds is None:
        return None
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise UserError(f"folds={folds!r}: k-fold cross-validation needs a whole number of folds >= 2 (each fold is "
                        "validation once while the others train; 5 is usual), e.g. `python sweep.py folds=5 "
                        "data=folder data.path=<dir>`; leave folds out for a sweep without folds.")
    clash = [o for o in overrides if override_key(o) in ("data.folds", "data.fold", "run_name")]
    if clash:
        raise UserError(f"folds={folds} sets data.folds, data.fold and run_name of every job itself; drop "
                        f"{' '.join(clash)} from the command.")
    return folds


def check_folder_data(folds: int, cfg: DictConfig) -> None:
    """Folds cut a lab's own folder (data=folder); BloodMNIST keeps its official split."""
    if cfg.data.get("_target_") != FOLDER_TARGET:
        raise UserError(f"folds={folds} cross-validates your own images (data=folder data.path=<dir or .csv>), but "
                        f"these jobs read {cfg.data.get('_target_')}: BloodMNIST comes with its official train, "
                        "validation and test split, which is kept so results compare with the study's. Add "
                        "data=folder data.path=<dir> to cross-validate a folder, or drop folds= to sweep BloodMNIST "
                        "over seeds.")


def override_fold(found: dict[str, str]) -> int | None:
    """The fold of a job from its overrides (``data.fold=``), None when it has none."""
    try:
        return int(found["data.fold"]) if "data.fold" in found else None
    except ValueError:
        return None
