"""The train/val/test split of a folder of images: drawn once, stratified and seeded, then kept in a file.

A split is drawn per class: each class gives ``round(n * test_fraction)`` images to test and ``round(n *
val_fraction)`` to val, at least one each, and the rest to train, so every class is scored in every split
(scikit-learn's stratified splitter does not promise that for a class of a few images). With ``folds=K``
(k-fold cross-validation) the test part stays that same fixed hold-out, and the other images are cut into K
folds by scikit-learn's ``StratifiedKFold``: fold ``i`` is the validation part, the other K-1 train. The K runs
then differ only in what they train and select on, and their test scores are all of the same images, so their
mean and spread compare like with like; validation takes early stopping and the trust state's calibration, so
it must not be the images a run is scored on.

The split file (``split.csv``: ``path,label,split``) is the one home of a run's split: written into the run
folder when drawn, read back by ``resume=`` and by evaluation instead of drawing again.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bloodcls.common.files import atomic_write
from bloodcls.data.folder import SPLIT_NAMES, Entry, LabelledFiles, class_order, listing
from bloodcls.errors import DataError

COLUMNS = ("path", "label", "split")


def _holdout(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def _needed(val_fraction: float, test_fraction: float, folds: int | None) -> int:
    """The fewest images of a class that leave every part at least one."""
    n = 2
    while n - _holdout(n, test_fraction) < (folds if folds else 1 + _holdout(n, val_fraction)):  # K folds, or val + train
        n += 1
    return n


def draw_split(files: LabelledFiles, val_fraction: float, test_fraction: float, seed: int,
               folds: int | None = None, fold: int = 0) -> list[str]:
    """The split of each entry (``train``/``val``/``test``); the CSV's own split column where it has one."""
    labels = files.labels()
    given = [e.split for e in files.entries]
    if all(given):
        split = np.array(given, dtype=object)
        _check_given(files, split, labels)
    else:
        split = np.full(len(labels), "train", dtype=object)
        short = []
        rng = np.random.default_rng(seed)
        for c, name in enumerate(files.class_names):
            members = rng.permutation(np.flatnonzero(labels == c))
            n_test, n_val = _holdout(len(members), test_fraction), _holdout(len(members), val_fraction)
            if len(members) < _needed(val_fraction, test_fraction, folds):
                short.append(f"{name} ({len(members)})")
                continue
            split[members[:n_test]] = "test"
            if folds is None:
                split[members[n_test:n_test + n_val]] = "val"
        if short:
            need = _needed(val_fraction, test_fraction, folds)
            parts = f"test plus {folds} folds" if folds else "train, val and test"
            raise DataError(
                f"data.path={files.source}: {len(short)} class{'es' if len(short) > 1 else ''} have too few images "
                f"for the split: {listing(short)}. With data.test_fraction={test_fraction}"
                + (f" and data.folds={folds}" if folds else f" and data.val_fraction={val_fraction}")
                + f", every class needs at least {need} images (one or more in each of {parts}). Add images, "
                "merge or drop the small classes, or use fewer folds.")
    if folds is not None:
        _fold(split, labels, folds, fold, seed)
    return [str(s) for s in split]


def _check_given(files: LabelledFiles, split: np.ndarray, labels: np.ndarray) -> None:
    empty = [s for s in SPLIT_NAMES if not (split == s).any()]
    untrained = [files.class_names[c] for c in range(len(files.class_names)) if not (split[labels == c] == "train").any()]
    if empty or untrained:
        what = (f"no {'/'.join(empty)} rows" if empty else "") + ("; " if empty and untrained else "") + (
            f"no train image of {listing(untrained)}" if untrained else "")
        raise DataError(f"data.path={files.source}: its split column leaves {what}. Every split needs images and "
                        "every class needs training images; fix the split column, or leave it out and a "
                        "stratified split is drawn.")


def _fold(split: np.ndarray, labels: np.ndarray, folds: int, fold: int, seed: int) -> None:
    """Fold ``fold`` of the non-test images becomes val and the rest train (in place)."""
    from sklearn.model_selection import StratifiedKFold

    pool = np.flatnonzero(split != "test")
    counts = np.bincount(labels[pool])
    if counts[counts > 0].min() < folds:
        raise DataError(f"data.folds={folds}: a class has only {counts[counts > 0].min()} images outside the test "
                        "split, fewer than the folds; every fold's validation part needs each class. Use fewer "
                        "folds (data.folds) or add images.")
    parts = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(pool, labels[pool])
    val = next(v for i, (_, v) in enumerate(parts) if i == fold)
    split[pool] = "train"
    split[pool[val]] = "val"


def write_split(path: str | Path, files: LabelledFiles, split: list[str]) -> None:
    """``path,label,split`` per image, atomically (a killed job never leaves half a split)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:  # class names in any script, on any locale
            out = csv.writer(fh)
            out.writerow(COLUMNS)
            out.writerows((e.path, e.label, s) for e, s in zip(files.entries, split, strict=True))

    atomic_write(Path(path), write)


def read_split(path: str | Path, root: Path, source: Path) -> LabelledFiles:
    """A split file back as labelled files (``root``: the folder its paths are relative to)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"The run's split file {path} cannot be read ({err}); it is the run's record of which image "
                        "is in which split. Restore it from a copy, or start a new run.") from None
    if not rows or any(set(COLUMNS) - set(r) or r["split"] not in SPLIT_NAMES for r in rows):
        raise DataError(f"The run's split file {path} is not a path,label,split table with train/val/test rows. "
                        "Restore it from a copy, or start a new run (a new split is drawn).")
    missing = [r["path"] for r in rows if not (root / r["path"]).is_file()]
    if missing:
        raise DataError(f"The run's split file {path} lists {len(missing)} images that are no longer under "
                        f"data.path={source}: {listing(missing)}. The run's split cannot be rebuilt without them: "
                        "put them back, or start a new run on the folder as it is now.")
    entries = [Entry(r["path"], r["label"], r["split"]) for r in rows]
    return LabelledFiles(root, source, entries, class_order([e.label for e in entries]))
