"""A user's image files for predict and the demo: which files a list of paths and folders names, and the
``--max-pixels`` option. The reader itself (any mode to RGB, centre square, bicubic resize, as BloodMNIST was
made) is :func:`bloodcls.common.images.load_image`, shared with ``data=folder`` training; re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bloodcls.common.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, center_square, load_image

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "ImageError", "add_max_pixels_option", "center_square", "expand_inputs",
           "load_image"]


def add_max_pixels_option(parser) -> None:
    """``--max-pixels`` for every command that reads user images (predict, demo)."""
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse larger images as decompression bombs (default {MAX_PIXELS:,})")


def expand_inputs(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(files to read, skipped entries with why, folders with no image file in them).

    A folder gives the image files directly inside it (by suffix, sorted); subfolders and other
    files are skipped. A file named explicitly is always tried, whatever its suffix.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    empty: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            files.append(path)  # a missing or bad file is reported when it is read
            continue
        found = 0
        for entry in sorted(path.iterdir()):
            if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                files.append(entry)
                found += 1
            else:
                skipped.append((entry, "a folder (folders are not searched)" if entry.is_dir()
                                else "not a .png/.jpg/.jpeg/.tif/.tiff/.bmp file"))
        if not found:
            empty.append((path, f"the folder holds no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} file"))
    return files, skipped, empty
