"""A lab's own images as labelled files: a folder of class folders or a CSV, checked, then read into arrays.

Two layouts (``data=folder data.path=...``):

- torchvision's ImageFolder layout, ``<dir>/<class name>/*.png|jpg|jpeg|tif|tiff|bmp`` (files in subfolders of
  a class folder count), listed with torchvision's own ``find_classes``/``make_dataset``;
- a CSV with a header ``path,label[,split]``: paths relative to the CSV's folder (or absolute), labels any
  text, split ``train``, ``val`` or ``test`` on every row or on none.

Class names are the folder names (or the CSV's labels), sorted as ImageFolder sorts them; a label's index is its
place in that order. Two names that read as one (:func:`bloodcls.data.class_names.normalise`: ``Lymphocytes`` and
``lymphocyte``) are refused, as a model's classes are matched by that form. Each image is read by :func:`bloodcls.common.images.load_image`, the reader predict and the
demo use (RGB, centre square, Pillow bicubic resize as the MedMNIST+ files were made), once per process.
Files that are not images, or that cannot be read, are listed with their count in a warning and skipped (and kept
in the run's results.json); what makes a folder unusable is one :class:`DataError` paragraph.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import find_classes, make_dataset

from bloodcls.common.images import IMAGE_SUFFIXES, ImageError, load_image
from bloodcls.data.class_names import FOLDER_FIX, keyed
from bloodcls.errors import DataError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
SHOWN = 5  # files named in a message; the rest are counted
LAYOUT = ("Lay the images out as <folder>/<class name>/<image> (PNG, JPEG, TIFF or BMP), or list them in a CSV "
          "with the header path,label (and optionally split: train, val or test) and give that .csv file instead of "
          "the folder.")


@dataclass(frozen=True)
class Entry:
    """One labelled image file: its path relative to the data root (as written in split files), its class name
    and, where the CSV (or a split file) gives one, its split."""

    path: str
    label: str
    split: str | None = None


@dataclass
class LabelledFiles:
    """What a folder or CSV lists, before any image is decoded."""

    root: Path  # entry paths are relative to it: the folder, or the CSV's folder
    source: Path  # data.path as given
    entries: list[Entry]
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why), reported once

    def labels(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.class_names)}
        return np.array([index[e.label] for e in self.entries], dtype=np.int64)


def listing(items: list[str], total: int | None = None) -> str:
    """``a, b, c and 7 more``: the first few of a list as a message names them."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {total - SHOWN} more" if total > SHOWN else "")


def class_order(labels: list[str]) -> list[str]:
    """The classes in index order: sorted by name, as torchvision's ImageFolder orders its class folders."""
    return sorted(set(labels))


def scan(path: str | Path, min_classes: int = 2) -> LabelledFiles:
    """The labelled image files ``path`` names (a folder of class folders or a .csv), checked; nothing decoded.
    Training needs two classes at least; scoring a model on one class of images (``min_classes=1``) is fine."""
    source = Path(str(path)).expanduser()
    if not source.exists():
        raise DataError(f"{path} does not exist: give a folder of class folders or a CSV file. {LAYOUT}")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{path} is a file but not a .csv. {LAYOUT}")
        return _checked(_scan_csv(source), min_classes)
    return _checked(_scan_folder(source), min_classes)


def _scan_folder(folder: Path) -> LabelledFiles:
    try:
        names, _ = find_classes(folder)
    except FileNotFoundError:
        names = []
    skipped = [(f"{c}/", "a hidden folder, not a class") for c in names if c.startswith(".")]
    names = [c for c in names if not c.startswith(".")]
    loose = sorted(p.name for p in folder.iterdir() if p.is_file())
    if not names:
        found = "holds image files but no class folders" if any(Path(n).suffix.lower() in IMAGE_SUFFIXES
                                                               for n in loose) else "is empty (no class folders)"
        raise DataError(f"{folder} {found}. {LAYOUT}")
    if {c.lower() for c in names} <= {"train", "val", "valid", "validation", "test"}:
        raise DataError(f"{folder} holds split folders ({', '.join(names)}), not class folders. Give "
                        "a folder of class folders (training draws a split and keeps it in the run folder), or list "
                        "the images in a CSV with the header path,label,split and give that .csv file instead.")
    skipped += [(name, "outside any class folder") for name in loose]
    entries, empty = [], []
    for cls in names:
        files = [Path(p) for p, _ in make_dataset(str(folder), {cls: 0}, is_valid_file=lambda _: True,
                                                  allow_empty=True)]
        images = [p for p in files if _why_not(p) is None]
        skipped += [(p.relative_to(folder).as_posix(), why) for p in files if (why := _why_not(p)) is not None]
        entries += [Entry(p.relative_to(folder).as_posix(), cls) for p in images]
        if not images:
            empty.append(f"{cls}/" + (f" ({len(files)} other files)" if files else ""))
    if empty:
        raise DataError(f"{folder}: {len(empty)} class folder{'s' if len(empty) > 1 else ''} hold"
                        f"{'' if len(empty) > 1 else 's'} no image: {listing(empty)}. Every class folder needs "
                        f"PNG, JPEG, TIFF or BMP images of that class; remove or fill the empty ones.")
    return LabelledFiles(folder, folder, entries, class_order([e.label for e in entries]), skipped)


def _why_not(path: Path) -> str | None:
    """Why a file in a class folder is not taken as an image (None: it is)."""
    if path.name.startswith("."):
        return "a hidden file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not a .png/.jpg/.jpeg/.tif/.tiff/.bmp file"
    return None


def _scan_csv(path: Path) -> LabelledFiles:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} cannot be read as a CSV ({type(err).__name__}: {err}). {LAYOUT}") from None
    if "path" not in columns or "label" not in columns:
        raise DataError(f"{path} has the columns {columns or 'none'}; it needs a header row naming path "
                        f"and label (and optionally split). {LAYOUT}")
    if not rows:
        raise DataError(f"{path} lists no images (a header and no rows). {LAYOUT}")
    where = [f"line {i + 2}" for i, r in enumerate(rows) if not r.get("path")]
    if where:
        raise DataError(f"{path}: {len(where)} rows have an empty path ({listing(where)}). Give every "
                        "row the image's path, relative to the CSV's folder or absolute.")
    where = [f"line {i + 2} ({r['path']})" for i, r in enumerate(rows) if not r.get("label")]
    if where:
        raise DataError(f"{path}: {len(where)} rows have an empty label: {listing(where)}. Give every "
                        "image its class name, or leave unlabelled images out of the CSV.")
    root = path.parent
    missing = [r["path"] for r in rows if not (root / r["path"]).expanduser().is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} of its {len(rows)} paths do not exist: "
                        f"{listing(missing)}. Paths are read relative to the CSV's folder ({root}) unless absolute; "
                        "fix the paths or copy the images there.")
    splits = [r.get("split") or None for r in rows]
    if "split" in columns and any(splits):
        bad = sorted({s for s in splits if s not in SPLIT_NAMES}, key=str)
        if bad:
            raise DataError(f"{path}: the split column holds {listing([str(b) for b in bad])}; every "
                            "row needs train, val or test there (or leave the column out, and a stratified split "
                            "is drawn).")
    else:
        splits = [None] * len(rows)
    entries = [Entry(r["path"], r["label"], s) for r, s in zip(rows, splits, strict=True)]
    return LabelledFiles(root, path, entries, class_order([e.label for e in entries]))


def _checked(files: LabelledFiles, min_classes: int = 2) -> LabelledFiles:
    if len(files.class_names) < min_classes:
        raise DataError(f"{files.source} has one class ({listing(files.class_names)}); a classifier "
                        f"needs at least two. {LAYOUT}")
    keyed(files.class_names, f"The classes of {files.source}", FOLDER_FIX)  # as a model's are matched
    return files


# -- decoding --------------------------------------------------------------------------------------------------
# The images of the last file list read, per image size (keyed by paths, sizes and modification times, not by
# labels or splits): a sweep's jobs in one process decode a folder once.
_decoded: dict[tuple, tuple[np.ndarray, dict[str, str]]] = {}


def _signature(files: LabelledFiles, img_size: int) -> tuple:
    def stamp(entry: Entry) -> tuple:
        stat = (files.root / entry.path).stat()
        return entry.path, stat.st_mtime_ns, stat.st_size

    return str(files.root.resolve()), img_size, tuple(stamp(e) for e in files.entries)


def _read_all(files: LabelledFiles, img_size: int) -> tuple[np.ndarray, dict[str, str]]:
    """(the readable images, stacked; path -> why for the others)."""
    key = _signature(files, img_size)
    if key not in _decoded:
        _decoded.clear()
        images, bad = [], {}
        for entry in files.entries:
            try:
                images.append(load_image(files.root / entry.path, img_size))
            except ImageError as err:
                bad[entry.path] = str(err)
        stack = np.stack(images) if images else np.zeros((0, img_size, img_size, 3), np.uint8)
        _decoded[key] = (stack, bad)
    return _decoded[key]


def decode(files: LabelledFiles, img_size: int) -> tuple[np.ndarray, LabelledFiles]:
    """(N x S x S x 3 uint8 images, the files they came from): unreadable files are moved to ``skipped``, with
    the reason, and the whole list is reported in one warning. A class left without images is a DataError."""
    images, bad = _read_all(files, img_size)
    read = replace(files, entries=[e for e in files.entries if e.path not in bad],
                   skipped=[*files.skipped, *bad.items()])
    _report_skipped(read)
    gone = [c for c in read.class_names if not any(e.label == c for e in read.entries)]
    if gone:
        raise DataError(f"{files.source}: no image of the class{'es' if len(gone) > 1 else ''} "
                        f"{listing(gone)} could be read (the warning above lists why). Replace the broken files "
                        "with readable PNG, JPEG, TIFF or BMP images.")
    return images, read


_reported: set[tuple] = set()


def _report_skipped(files: LabelledFiles) -> None:
    if not files.skipped or (key := (str(files.source), len(files.skipped))) in _reported:
        return
    _reported.add(key)
    shown = [f"{p} ({why})" for p, why in files.skipped]
    log.warning("Skipped %d files of %s that are not readable images: %s. Training uses the other %d "
                "images; the run's results.json lists every skipped file.", len(shown), files.source,
                "; ".join(shown[:SHOWN]) + (f"; and {len(shown) - SHOWN} more" if len(shown) > SHOWN else ""),
                len(files.entries))
