"""Would stain normalisation at the input undo the shift suite's colour and light shifts? (issue 21's lever)

torchstain's Macenko normaliser (torch backend), fitted on the first training image, applied to 100
training images before and after a shift: if it undid the shift, the two normalised images would be
closer than the raw ones. Also times it per image on one thread. Not a dependency of the package:
    pip install torchstain && python scripts/stain_norm_probe.py ~/.medmnist/bloodmnist_64.npz
"""

import sys
import time

import numpy as np
import torch
import torchstain
import torchvision.transforms.v2.functional as F

SHIFTS = {
    "saturation x0.4": lambda im: F.adjust_saturation(im, 0.4),
    "saturation x1.8": lambda im: F.adjust_saturation(im, 1.8),
    "hue +0.05": lambda im: F.adjust_hue(im, 0.05),
    "brightness x0.7": lambda im: F.adjust_brightness(im, 0.7),
    "contrast x0.6": lambda im: F.adjust_contrast(im, 0.6),
}


def main(path: str, n: int = 100) -> None:
    torch.set_num_threads(1)
    images = np.load(path)["train_images"]
    chw = [torch.from_numpy(im).permute(2, 0, 1) for im in images[: max(n, 400)]]
    norm = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    norm.fit(chw[0].float())
    t0 = time.perf_counter()
    for im in chw[:400]:
        norm.normalize(I=im.float(), stains=False)
    print(f"Macenko, torch backend, 1 thread: {1000 * (time.perf_counter() - t0) / 400:.2f} ms per image")
    print("| shift | mean abs difference, raw (0-255) | after normalising both |\n|---|---|---|")
    for name, shift in SHIFTS.items():
        raw, normed = [], []
        for im in chw[:n]:
            moved = shift(im)
            a, _, _ = norm.normalize(I=im.float(), stains=False)
            b, _, _ = norm.normalize(I=moved.float(), stains=False)
            raw.append((im.float() - moved.float()).abs().mean().item())
            normed.append((a.float() - b.float()).abs().mean().item())
        print(f"| {name} | {np.mean(raw):.1f} | {np.mean(normed):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
