"""What the Python API takes as images, turned into what ``bloodcls predict`` would read from files.

Every input becomes the S x S x 3 uint8 RGB image that :func:`bloodcls.common.images.load_image` makes of a file
(any mode to RGB, centre square, bicubic resize), so :class:`bloodcls.inference.classifier.Classifier` judges a
PIL image, an array or a tensor exactly as predict judges the same picture saved as a PNG:

- a path (``str`` or ``os.PathLike``): the file, read as predict reads it; a folder: its image files, sorted, not
  searched recursively (as predict);
- a PIL image: as if it had been read from a file (EXIF orientation, mode, square, size);
- a NumPy array, channels last as NumPy and Pillow hold images: ``H x W`` (grey), ``H x W x C`` or a batch
  ``N x H x W x C`` (C = 1, 3 or 4);
- a torch tensor, channels first as torchvision holds them: ``H x W``, ``C x H x W`` or ``N x C x H x W``;
- pixel values uint8 (0-255) or float in [0, 1] (rounded to the nearest of 256 levels, as saving it would);
- a list or tuple of any of these, in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bloodcls.common.images import MAX_PIXELS, ImageError, load_image, prepare_image
from bloodcls.errors import UserError
from bloodcls.inference.images import expand_inputs

LAYOUTS = ("a path, a PIL image, a NumPy array (H x W, H x W x C or N x H x W x C, channels last) or a tensor "
           "(H x W, C x H x W or N x C x H x W, channels first), with C = 1, 3 or 4 and uint8 (0-255) or float "
           "[0, 1] pixel values, or a list of these")


class InputError(UserError):
    """An input the API cannot read as an image (the message names it and says what it takes)."""


def as_images(items: Any, size: int, max_pixels: int = MAX_PIXELS) -> Iterator[tuple[str | None, np.ndarray]]:
    """(path or None, S x S x 3 uint8) for every image ``items`` holds, in order; an unreadable one raises
    :class:`InputError` naming it."""
    if isinstance(items, (list, tuple)):
        for item in items:
            yield from as_images(item, size, max_pixels)
    elif isinstance(items, (str, os.PathLike)):
        yield from _files(Path(items), size, max_pixels)
    elif isinstance(items, Image.Image):
        yield None, _prepared(items, size, "the PIL image")
    elif isinstance(items, (np.ndarray, torch.Tensor)):
        for picture in _pictures(items):
            yield None, _prepared(picture, size, "the array")
    else:
        raise InputError(f"Cannot read a {type(items).__name__} as an image: give {LAYOUTS}.")


def _files(path: Path, size: int, max_pixels: int) -> Iterator[tuple[str, np.ndarray]]:
    files, _, empty = expand_inputs([path])
    for folder, why in empty:
        raise InputError(f"{folder}: {why}.")
    for file in files:
        try:
            yield str(file), load_image(file, size, max_pixels=max_pixels)
        except ImageError as err:
            raise InputError(f"{file}: {err}.") from None


def _prepared(picture: Image.Image, size: int, what: str) -> np.ndarray:
    try:
        return prepare_image(picture, size)
    except (ImageError, OSError, ValueError) as err:
        raise InputError(f"{what} cannot be read as an image ({err}).") from None


def _pictures(array: np.ndarray | torch.Tensor) -> list[Image.Image]:
    """The PIL images an array or tensor holds (one, or a batch along its first axis)."""
    channels_first = isinstance(array, torch.Tensor)
    values = array.detach().cpu().numpy() if channels_first else np.asarray(array)
    if values.ndim == 2:
        values = values[None, None] if channels_first else values[None, ..., None]
    elif values.ndim == 3:
        values = values[None]
    if values.ndim != 4:
        raise InputError(f"An array of shape {tuple(array.shape)} is not an image or a batch of images: give {LAYOUTS}.")
    if channels_first:
        values = values.transpose(0, 2, 3, 1)
    if values.shape[-1] not in (1, 3, 4):
        order = "channels first (C x H x W)" if channels_first else "channels last (H x W x C)"
        raise InputError(f"An array of shape {tuple(array.shape)} has {values.shape[-1]} channels where 1, 3 or 4 are "
                         f"read; {'tensors' if channels_first else 'NumPy arrays'} are read {order}: give {LAYOUTS}.")
    return [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in _as_uint8(values)]


def _as_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if not np.issubdtype(values.dtype, np.floating):
        raise InputError(f"Pixel values of type {values.dtype} are not read: give uint8 (0-255) or float values in "
                         "[0, 1] (e.g. x.astype(np.uint8) for 0-255 integers).")
    if not values.size:
        return values.astype(np.uint8)
    finite = values[np.isfinite(values)]
    if finite.size < values.size or finite.min() < 0 or finite.max() > 1:
        what = ("some are not finite numbers" if finite.size < values.size else
                f"these range from {finite.min():g} to {finite.max():g}")
        raise InputError(f"Float pixel values are read as [0, 1] (torchvision's ToTensor); {what}. Scale them into "
                         "[0, 1], or give uint8 values 0-255.")
    return np.rint(values * 255).astype(np.uint8)
