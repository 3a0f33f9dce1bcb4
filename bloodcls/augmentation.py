"""Training augmentation of the study (rot90, horizontal flip, 90-100 % area zoom-crop).

Two implementations of the same distribution:

* :class:`GeometricAugment` works on a whole batch at once (on the GPU when the batch is there):
  each sample's rotation, flip and crop are folded into one affine matrix and applied with a single
  ``grid_sample`` call, so the cost is one kernel per batch instead of one PIL call per image.
* :func:`per_sample_transforms` is the classic torchvision v2 pipeline run per image in DataLoader
  workers; it is kept as the reference ("plain") path for the benchmark.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

MIN_AREA = 0.9


class GeometricAugment(nn.Module):
    """Random k*90 degree rotation, horizontal flip (p=0.5) and square zoom-crop, per sample.

    Input and output are float N x C x H x W (square). With no zoom the resampling points fall on
    pixel centres, so rotation and flip alone are exact pixel permutations.
    """

    def __init__(self, min_area: float = MIN_AREA, flip_p: float = 0.5, rotate: bool = True) -> None:
        super().__init__()
        if not 0 < min_area <= 1:
            raise ValueError(f"min_area must be in (0, 1], got {min_area}")
        self.min_area = min_area
        self.flip_p = flip_p
        self.rotate = rotate

    def sample_matrices(self, n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-sample 2x3 affine matrices mapping output to input coordinates in [-1, 1]."""
        k = torch.randint(0, 4 if self.rotate else 1, (n,), device=device)
        flip = torch.rand(n, device=device) < self.flip_p
        area = self.min_area + (1 - self.min_area) * torch.rand(n, device=device)
        side = area.sqrt()  # crop side as a fraction of the image side
        centre = (torch.rand(n, 2, device=device) * 2 - 1) * (1 - side).unsqueeze(1)
        angle = k.to(dtype) * (math.pi / 2)
        cos, sin = angle.cos().round(), angle.sin().round()  # exact 0/+-1 for multiples of 90 degrees
        sx = torch.where(flip, -side, side)
        theta = torch.empty(n, 2, 3, device=device, dtype=dtype)
        theta[:, 0, 0] = cos * sx
        theta[:, 0, 1] = -sin * side
        theta[:, 1, 0] = sin * sx
        theta[:, 1, 1] = cos * side
        theta[:, :, 2] = centre
        return theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.sample_matrices(x.shape[0], x.device, torch.float32)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return out.to(x.dtype).clamp_(0, 1)


class RandomRot90(v2.Transform):
    """Rotate by a random multiple of 90 degrees (torchvision has no exact rot90 transform)."""

    def make_params(self, flat_inputs: list) -> dict:
        return {"k": int(torch.randint(0, 4, ()).item())}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        return torch.rot90(inpt, params["k"], dims=(-2, -1))


def per_sample_transforms(img_size: int, augment: bool) -> v2.Compose:
    """Per-image torchvision v2 pipeline on a C x H x W uint8 tensor, ending in float [0, 1]."""
    steps: list = []
    if augment:
        steps += [
            RandomRot90(),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomResizedCrop(img_size, scale=(MIN_AREA, 1.0), ratio=(1.0, 1.0), antialias=True),
        ]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)
