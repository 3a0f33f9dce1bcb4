"""Images that are not blood cells, for scoring the gate: natural photos shipped with scikit-image, random
crops of them, uniform colours and noise. Built on the fly (nothing downloaded, nothing stored)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# scikit-image's bundled photos and scans (no microscopy or medical images among them)
NATURAL = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "horse",
           "hubble_deep_field", "logo", "moon", "page", "rocket", "text")


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def natural_images() -> list[np.ndarray]:
    import skimage.data

    return [_rgb(getattr(skimage.data, name)()) for name in NATURAL]


def _square(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[top:top + s, left:left + s])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))


def far_ood_sets(size: int, n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """name -> N x size x size x 3 uint8: ``natural`` (whole photos), ``natural_crops`` (n random crops of
    10-60 % of a photo's side), ``uniform`` (n plain colours, white and black among them), ``noise``
    (n images of uniform or Gaussian noise)."""
    rng = np.random.default_rng(seed)
    photos = natural_images()
    crops = []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        h, w = img.shape[:2]
        side = max(8, int(min(h, w) * rng.uniform(0.1, 0.6)))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crops.append(_square(img[top:top + side, left:left + side], size))
    colours = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    colours[:2] = [[255, 255, 255], [0, 0, 0]]
    uniform = np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).copy()
    half = n // 2
    noise = np.concatenate([
        rng.integers(0, 256, (half, size, size, 3), dtype=np.uint8),
        np.clip(rng.normal(rng.uniform(60, 200, (n - half, 1, 1, 1)), rng.uniform(10, 60, (n - half, 1, 1, 1)),
                           (n - half, size, size, 3)), 0, 255).astype(np.uint8),
    ])
    return {"natural": np.stack([_square(p, size) for p in photos]), "natural_crops": np.stack(crops),
            "uniform": uniform, "noise": noise}
