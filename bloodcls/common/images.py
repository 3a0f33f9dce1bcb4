"""Read an image file into what the networks take: S x S x 3 uint8 RGB (one reader for training and prediction).

BloodMNIST was made from 200 x 200 centre crops of the PBC microscope images, converted to RGB
and resized with Pillow's bicubic filter. Any image file gets the same treatment: any mode to RGB
(transparency composited onto white, like the bright smear background), centre-cropped to a
square, then resized to the model's input size. A folder of a user's own images (``data=folder``)
is read with this reader, and so is each image given to predict and the demo, so a model sees its
images at training and at prediction prepared alike. Every way a file can be unusable is an
:class:`ImageError` with one sentence saying what is wrong.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Pillow's own default (about 89 Mpx, a 9459 x 9459 image); larger files are refused as possible
# decompression bombs (a few KB that would expand to gigabytes of pixels).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# What load_image does, in words, for readers without bloodcls (a model bundle's config.json states it).
READ_AS = {"color": "RGB (any mode converted; transparency composited onto white; 16-bit greyscale scaled to 0-255)",
           "orientation": "EXIF orientation applied", "crop": "centre square (the shorter side)",
           "interpolation": "bicubic (Pillow's Image.BICUBIC)"}


class ImageError(ValueError):
    """The file cannot be used as an image (its message names the file and the reason)."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit / float microscopy greyscale
        arr = np.asarray(img, dtype=np.float32)
        hi = float(arr.max()) if arr.size else 0.0
        arr = arr * (255.0 / hi) if hi > 0 else arr
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def center_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def load_image(path: str | Path, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``size`` x ``size`` x 3 uint8 RGB from any PNG/JPEG/TIFF/BMP (first frame of multi-frame files)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError("no such file" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise ImageError("the file is empty (0 bytes)")
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, don't just warn
            with Image.open(path) as img:
                img.load()  # Image.open is lazy: truncated data only shows up here
                rgb = oriented_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"refused as a possible decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read (expected PNG, JPEG, TIFF or BMP)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or corrupt data
        raise ImageError(f"corrupt or truncated image data ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return square_resized(rgb, size)


def oriented_rgb(img: Image.Image) -> Image.Image:
    """A decoded image turned upright (its EXIF orientation) and converted to RGB."""
    return _to_rgb(ImageOps.exif_transpose(img) or img)


def square_resized(rgb: Image.Image, size: int) -> np.ndarray:
    """An RGB image's centre square, resized (bicubic) to ``size`` x ``size``: S x S x 3 uint8."""
    if min(rgb.size) < 1:
        raise ImageError(f"the image has no pixels ({rgb.size[0]} x {rgb.size[1]})")
    square = center_square(rgb)
    if square.size != (size, size):
        square = square.resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.uint8)


def prepare_image(img: Image.Image, size: int) -> np.ndarray:
    """An image already decoded (a PIL image) prepared exactly as :func:`load_image` prepares a file's."""
    return square_resized(oriented_rgb(img), size)
