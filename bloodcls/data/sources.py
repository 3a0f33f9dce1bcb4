"""The images a finished run was trained and scored on, loaded again from what its results.json records: the
BloodMNIST file, or its folder with the run's own split file (data=folder). For the commands that score runs
after training (the shift suite, the trust state, evaluation)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bloodcls.common.rundir import SPLIT_FILE
from bloodcls.data.files import default_root, ensure_file, load_npz
from bloodcls.data.folder_datamodule import load_folder_splits


def is_folder_run(data_cfg: Mapping[str, Any] | None) -> bool:
    """Whether a run's data config (results.json's ``config.data``) is a folder of the user's images."""
    return str((data_cfg or {}).get("_target_", "")).endswith("FolderDataModule")


def run_splits(run_dir: str | Path | None, data_cfg: Mapping[str, Any] | None, img_size: int,
               root: str | Path | None = None, download: bool = True
               ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Path]:
    """(split -> (images, labels), where they were read from) for the run in ``run_dir``.

    A folder run reads its ``split.csv`` (drawn again with the run's own settings, never written, when the run
    folder has none); any other run reads the BloodMNIST file under ``root``, else the run's ``data.root``,
    else the default root.
    """
    data_cfg = data_cfg or {}
    if is_folder_run(data_cfg):
        split_file = Path(run_dir) / SPLIT_FILE if run_dir is not None else None
        loaded = load_folder_splits(
            data_cfg["path"], img_size, split_file=split_file, val_fraction=data_cfg.get("val_fraction", 0.1),
            test_fraction=data_cfg.get("test_fraction", 0.2), split_seed=data_cfg.get("split_seed", 0),
            folds=data_cfg.get("folds"), fold=data_cfg.get("fold", 0), write=False)
        return loaded.arrays, Path(str(data_cfg["path"])).expanduser()
    path = ensure_file(root or data_cfg.get("root") or default_root(), img_size, download)
    return load_npz(path, img_size), path
