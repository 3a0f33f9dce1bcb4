"""A lab's unlabelled images, read for a model: every image file under a folder (any layout) or in a CSV.

What ``bloodcls adapt`` recomputes a model's BatchNorm statistics on. A folder may be flat or hold class folders
(at any depth: labels are not needed, so the layout says nothing); a CSV needs a ``path`` column and ignores any
``label`` or ``split`` column. Each image is read by :func:`bloodcls.common.images.load_image`, the reader
predict, the demo and ``data=folder`` use (RGB, centre square, bicubic resize to the model's input), so the
statistics are those of the images the model will be given. Hidden files, files that are not images and files
that cannot be read are listed and skipped; a source with nothing readable is one :class:`DataError` paragraph.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloodcls.common.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, load_image
from bloodcls.data.folder import _why_not as why_not_image
from bloodcls.data.folder import listing
from bloodcls.errors import DataError

LAYOUT = ("Give a folder of PNG, JPEG, TIFF or BMP images (flat, or in class folders: labels are not needed), or "
          "a CSV whose header names a path column (paths relative to the CSV's folder or absolute).")


@dataclass
class UnlabelledImages:
    """The readable images of a source, in file order, and what was left out."""

    images: np.ndarray  # N x S x S x 3 uint8, as predict prepares them
    paths: list[str]  # relative to ``root`` (absolute where a CSV names a file outside it)
    root: Path
    source: Path  # the folder or CSV as given
    digest: str  # sha256 over the read files' paths and contents: which images, exactly
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of every file left out

    def __len__(self) -> int:
        return len(self.paths)


def list_files(path: str | Path) -> tuple[Path, Path, list[str], list[tuple[str, str]]]:
    """(root, source, candidate image paths relative to root, skipped (path, why)): nothing decoded yet."""
    source = Path(str(path)).expanduser()
    if not source.exists():
        raise DataError(f"{path} does not exist. {LAYOUT}")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{path} is a file but not a .csv. {LAYOUT}")
        return source.parent, source, _csv_paths(source), []
    files, skipped = [], []
    for item in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = item.relative_to(source)
        hidden = any(part.startswith(".") for part in rel.parts[:-1])
        why = "in a hidden folder" if hidden else why_not_image(item)
        (skipped.append((rel.as_posix(), why)) if why else files.append(rel.as_posix()))
    if not files:
        raise DataError(f"{path} holds no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} file"
                        f"{f' ({len(skipped)} other files)' if skipped else ''}. {LAYOUT}")
    return source, source, files, skipped


def _csv_paths(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} cannot be read as a CSV ({type(err).__name__}: {err}). {LAYOUT}") from None
    if "path" not in columns:
        raise DataError(f"{path} has the columns {columns or 'none'}; it needs a header row naming a path column "
                        f"(label and split columns may follow and are ignored). {LAYOUT}")
    paths = [r["path"] for r in rows if r.get("path")]
    if not paths:
        raise DataError(f"{path} lists no image (no row with a path). {LAYOUT}")
    return paths


def load_unlabelled(path: str | Path, img_size: int, max_pixels: int = MAX_PIXELS) -> UnlabelledImages:
    """Every readable image ``path`` names, at ``img_size`` px; unreadable ones go to ``skipped`` with the reason.
    Nothing readable at all is a DataError naming the first few files and why."""
    root, source, paths, skipped = list_files(path)
    images, read, lines = [], [], []
    not_images = len(skipped)  # skipped when listed: not image files at all
    for rel in paths:
        file = (root / rel).expanduser()
        try:
            images.append(load_image(file, img_size, max_pixels=max_pixels))
        except ImageError as err:
            skipped.append((rel, str(err)))
            continue
        read.append(rel)
        lines.append(f"{rel}\0{hashlib.sha256(file.read_bytes()).hexdigest()}\n")
    if not read:
        bad = [f"{p} ({why})" for p, why in skipped[not_images:]]
        others = f" (and {not_images} other files, not images)" if not_images else ""
        raise DataError(f"{source}: none of its {len(paths)} image files could be read{others}: {listing(bad)}. "
                        "Replace them with readable PNG, JPEG, TIFF or BMP images of the lab's blood cells.")
    digest = hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()  # the same files give it in any order
    return UnlabelledImages(np.stack(images), read, root, source, digest, skipped)
