"""Small, learnable stand-ins for BloodMNIST in the official file layout (tests, benchmarks, demos).

Each class has its own colour and a blob in its own position, on a noisy background, so a short
training run must reach high accuracy if the pipeline is right, and stays at chance if it is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloodcls.data import NUM_CLASSES, SPLITS, file_name

PALETTE = np.array(
    [[230, 60, 60], [60, 200, 60], [60, 60, 230], [220, 220, 60], [200, 60, 200], [60, 210, 210],
     [250, 150, 40], [120, 120, 120]],
    dtype=np.float32,
)


def synthetic_split(n_per_class: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` images of every class: N x S x S x 3 uint8 images and N x 1 uint8 labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = rng.normal(140, 25, size=(len(labels), size, size, 3)).astype(np.float32)
    for i, c in enumerate(labels):
        cy, cx = 0.3 + 0.4 * (c // 4), 0.2 + 0.2 * (c % 4)
        cy, cx = cy + rng.uniform(-0.05, 0.05), cx + rng.uniform(-0.05, 0.05)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < 0.18**2
        images[i][mask] = PALETTE[c] + rng.normal(0, 15, size=(int(mask.sum()), 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8).reshape(-1, 1)


def write_synthetic_npz(
    root: str | Path, size: int = 28, per_class: tuple[int, int, int] = (24, 6, 10), seed: int = 0
) -> Path:
    """Write ``bloodmnist[_size].npz`` under ``root`` with (train, val, test) images per class."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, (split, n) in enumerate(zip(SPLITS, per_class, strict=True)):
        images, labels = synthetic_split(n, size, seed=seed * 10 + k)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    path = root / file_name(size)
    np.savez(path, **arrays)
    return path


FOLDER_CLASSES = ("blast", "lymph", "mono", "neutro")


def write_synthetic_folder(root: str | Path, n_per_class: int = 20, size: int = 40, seed: int = 0,
                           classes: tuple[str, ...] = FOLDER_CLASSES) -> Path:
    """A lab folder in the ImageFolder layout, ``root/<class>/<i>.png|jpg``: the learnable synthetic images of the
    first ``len(classes)`` synthetic classes, at ``size`` px (resized on reading), PNG and JPEG alternating; the
    first image of the first class is saved greyscale and the first of the second RGBA (both stay readable), and
    ``root/<last class>/broken.png`` is half a PNG. Returns ``root``."""
    from PIL import Image

    root = Path(root)
    images, labels = synthetic_split(n_per_class, size, seed=seed)
    labels = labels.reshape(-1)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate(np.flatnonzero(labels == c)):
            img = Image.fromarray(images[idx])
            if i == 0 and c == 0:
                img = img.convert("L")
            elif i == 0 and c == 1:
                img = img.convert("RGBA")
            img.save(root / name / (f"{i:03d}.png" if i % 2 == 0 or img.mode == "RGBA" else f"{i:03d}.jpg"),
                     quality=95)
    good = (root / classes[-1] / "000.png").read_bytes()
    (root / classes[-1] / "broken.png").write_bytes(good[: len(good) // 2])
    return root
