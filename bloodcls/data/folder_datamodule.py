"""A folder (or CSV) of a lab's own images as a data module: ``python train.py data=folder data.path=<dir>``.

:func:`load_folder_splits` is the whole path from ``data.path`` to the arrays the BloodMNIST file gives (list
and check the files, decode them once, take the run's split or draw it and write it down); the data module and
any command that needs a run's images again (the shift suite, evaluation) use it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from bloodcls.common.rundir import SPLIT_FILE
from bloodcls.data.datamodule import ArrayDataModule
from bloodcls.data.folder import SPLIT_NAMES, LabelledFiles, decode, scan
from bloodcls.data.splits import draw_split, read_split, write_split
from bloodcls.errors import DataError


@dataclass
class FolderSplits:
    """A folder's images in the data modules' arrays, with what was read and how it was split."""

    files: LabelledFiles  # the images used, each with its split; ``files.skipped``: those left out, and why
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (N x S x S x 3 uint8, N int64)
    split_file: Path | None  # where the split is kept (None: drawn in memory only)
    drawn: bool  # drawn now (False: read back from split_file)


def check_split_settings(val_fraction: float, test_fraction: float, folds: int | None, fold: int) -> None:
    """The settings together (each alone is checked by bloodcls.schema): the parts must leave room for train."""
    if val_fraction + test_fraction >= 1:
        raise DataError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave nothing "
                        "to train on: keep their sum below 1 (the defaults are 0.1 and 0.2).")
    if folds is not None and not 0 <= fold < folds:
        raise DataError(f"data.fold={fold} does not exist with data.folds={folds}: folds are numbered 0 to "
                        f"{folds - 1}.")


def load_folder_splits(path: str | Path, img_size: int, *, split_file: str | Path | None = None,
                       val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                       folds: int | None = None, fold: int = 0, write: bool = True) -> FolderSplits:
    """``data.path`` read into train/val/test arrays at ``img_size`` px.

    When ``split_file`` exists its split is used and nothing is drawn (a resumed run, evaluation); otherwise the
    split is drawn (:func:`bloodcls.data.splits.draw_split`) and, with ``write``, written to ``split_file``.
    """
    check_split_settings(val_fraction, test_fraction, folds, fold)
    split_file = Path(split_file) if split_file else None
    source = scan(path) if split_file is None or not split_file.is_file() else None
    if source is None:
        files = _listed(path, split_file)
        images, read = decode(files, img_size)
        if len(read.entries) < len(files.entries):
            raise DataError(f"{len(files.entries) - len(read.entries)} images that the run's split file {split_file} "
                            "lists cannot be read any more (the warning above names them), so the run's split cannot "
                            "be rebuilt. Restore those files, or start a new run.")
        split = [e.split for e in read.entries]
    else:
        images, read = decode(source, img_size)
        split = draw_split(read, val_fraction, test_fraction, split_seed, folds, fold)
        if split_file is not None and write:
            _write_once(split_file, read, split)
    labels, split = read.labels(), np.array(split, dtype=object)
    arrays = {s: (images[split == s], labels[split == s]) for s in SPLIT_NAMES}
    read = replace(read, entries=[replace(e, split=str(s)) for e, s in zip(read.entries, split, strict=True)])
    return FolderSplits(read, arrays, split_file, drawn=source is not None)


def _listed(path: str | Path, split_file: Path) -> LabelledFiles:
    """The split file's images, their paths read relative to ``data.path`` (its folder, for a CSV)."""
    source = Path(str(path)).expanduser()
    if not source.exists():
        raise DataError(f"data.path={path} does not exist, so the images the run's split file {split_file} lists "
                        "cannot be read. Point data.path at the folder (or CSV) the run was trained on.")
    root = source.parent if source.is_file() else source
    return read_split(split_file, root, source)


@rank_zero_only
def _write_once(split_file: Path, files: LabelledFiles, split: list[str]) -> None:
    split_file.parent.mkdir(parents=True, exist_ok=True)
    write_split(split_file, files, split)


class FolderDataModule(ArrayDataModule):
    """A lab's images from a folder of class folders or a CSV (:mod:`bloodcls.data.folder`), split once per run
    (:mod:`bloodcls.data.splits`); everything else as :class:`ArrayDataModule`.

    The folder is listed when its class names are first asked for (a cheap directory walk; the model is built
    with them) and decoded once, in ``prepare_data`` or ``setup``. In a run (``run_dir``) the split is read from
    ``<run>/split.csv`` when it is there (``resume=``) and written there when drawn.
    """

    def __init__(self, path: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 split_seed: int = 0, folds: int | None = None, fold: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not path:
            raise DataError("data=folder needs data.path=<folder of class folders, or a .csv of path,label[,split]>.")
        check_split_settings(val_fraction, test_fraction, folds, fold)
        self.source = path
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.folds, self.fold = folds, fold
        self._listing: LabelledFiles | None = None
        self._loaded: FolderSplits | None = None

    @property
    def split_file(self) -> Path | None:
        return self.run_dir / SPLIT_FILE if self.run_dir is not None else None

    def _files(self) -> LabelledFiles:
        if self._loaded is not None:
            return self._loaded.files
        if self._listing is None:
            split_file = self.split_file
            kept = split_file is not None and split_file.is_file()
            self._listing = _listed(self.source, split_file) if kept else scan(self.source)
        return self._listing

    @property
    def class_names(self) -> list[str]:  # type: ignore[override]
        return list(self._files().class_names)

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self._files().class_names)

    def prepare_data(self) -> None:
        self.load_arrays()

    def load_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._loaded is None:
            self._loaded = load_folder_splits(
                self.source, self.img_size, split_file=self.split_file, val_fraction=self.val_fraction,
                test_fraction=self.test_fraction, split_seed=self.split_seed, folds=self.folds, fold=self.fold)
            self.path = Path(str(self.source)).expanduser()
        return self._loaded.arrays

    def record(self) -> dict[str, Any]:
        loaded = self._loaded
        extra = {"split_file": str(loaded.split_file) if loaded and loaded.split_file else None,
                 "split_drawn": loaded.drawn if loaded else None, "folds": self.folds,
                 "fold": self.fold if self.folds else None,
                 "skipped": [{"path": p, "why": why} for p, why in (loaded.files.skipped if loaded else [])]}
        return {**super().record(), **extra}
