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


# -- robust recipe: photometric augmentation for lab variability (data.augment=robust) -------------------------

REFERENCE_SIZE = 64  # spatial strengths (blur sigma, motion length) are in pixels of a 64 px image


def _odd(v: float) -> int:
    return max(3, 2 * round((v - 1) / 2) + 1)


class RandomResample(nn.Module):
    """Down-sample a random subset to ``scale`` x the side and back (a lower-resolution camera)."""

    def __init__(self, scale: tuple[float, float] = (0.4, 1.0), p: float = 0.15) -> None:
        super().__init__()
        self.scale, self.p = tuple(scale), p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pick = (torch.rand(len(x), device=x.device) < self.p).nonzero().flatten().tolist()
        if not pick:
            return x
        out, size = x.clone(), x.shape[-1]
        lo, hi = self.scale
        for i in pick:  # a few images per batch, each to its own size
            small = max(2, round(size * (lo + (hi - lo) * float(torch.rand(())))))
            low = F.interpolate(x[i : i + 1], size=(small, small), mode="bilinear", antialias=True, align_corners=False)
            out[i : i + 1] = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
        return out


class RandomJPEG(nn.Module):
    """JPEG-code a random subset at a random quality per image, with torchvision's codec.

    kornia's differentiable ``RandomJPEG`` is about 4x slower on CPU than torchvision's libjpeg codec
    (and we need no gradient); the codec runs on CPU, so on a GPU only the picked images make the trip.
    """

    def __init__(self, quality: tuple[int, int] = (20, 95), p: float = 0.25) -> None:
        super().__init__()
        self.quality, self.p = (int(quality[0]), int(quality[1])), p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pick = (torch.rand(len(x), device=x.device) < self.p).nonzero().flatten()
        if len(pick) == 0:
            return x
        quality = torch.randint(self.quality[0], self.quality[1] + 1, (len(pick),)).tolist()
        u8 = x[pick].clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        coded = torch.stack([v2.functional.jpeg(img, q) for img, q in zip(u8, quality, strict=True)])
        out = x.clone()
        out[pick] = coded.to(x.device, x.dtype).div(255)
        return out


class PhotometricAugment(nn.Module):
    """Lab-variability augmentation of the robust recipe, per sample and batched on the batch's device.

    Colour jitter (brightness, contrast, saturation, hue: torchvision's formulas, via kornia), random
    gamma, Gaussian or motion blur, down-/up-sampling, Gaussian noise and JPEG coding, each applied
    to a random subset (probability ``*_p``) in the order light -> optics -> sensor -> storage.
    Runs after :class:`GeometricAugment` on float N x 3 x S x S in [0, 1] and keeps that range.
    Spatial strengths are in pixels of a 64 px image and scaled with ``img_size``.

    ``share`` is the fraction of images the whole stack may touch (the rest stay clean, so the
    network keeps seeing the lab's own images); ``ramp_epochs`` grows that fraction linearly from 0
    at epoch 0 to ``share`` at that epoch (a curriculum: learn the cells first, then the variability).
    """

    def __init__(
        self,
        img_size: int = REFERENCE_SIZE,
        brightness: float = 0.3,
        contrast: float = 0.35,
        saturation: float = 0.5,
        hue: float = 0.06,
        jitter_p: float = 0.8,
        gamma: tuple[float, float] = (0.6, 1.7),
        gamma_p: float = 0.3,
        blur_sigma: tuple[float, float] = (0.3, 1.6),
        blur_p: float = 0.25,
        motion_length: tuple[int, int] = (3, 9),
        motion_p: float = 0.15,
        resample: tuple[float, float] = (0.4, 1.0),
        resample_p: float = 0.15,
        noise_std: float = 0.05,
        noise_p: float = 0.25,
        jpeg_quality: tuple[int, int] = (20, 95),
        jpeg_p: float = 0.25,
        share: float = 1.0,
        ramp_epochs: int = 0,
    ) -> None:
        super().__init__()
        import kornia.augmentation as K

        if not 0.0 <= share <= 1.0 or ramp_epochs < 0:
            raise ValueError(f"share must lie in [0, 1] and ramp_epochs be >= 0, not {share} and {ramp_epochs}")
        self.share, self.ramp_epochs = float(share), int(ramp_epochs)

        s = img_size / REFERENCE_SIZE
        sigma = (blur_sigma[0] * s, blur_sigma[1] * s)
        steps: list[nn.Module] = []
        if jitter_p > 0:
            steps.append(K.ColorJitter(brightness, contrast, saturation, hue, p=jitter_p))
        if gamma_p > 0:
            steps.append(K.RandomGamma(tuple(gamma), p=gamma_p))
        if blur_p > 0:
            k = min(_odd(2 * math.ceil(3 * sigma[1]) + 1), _odd(img_size - 2))
            steps.append(K.RandomGaussianBlur((k, k), sigma, p=blur_p))
        if motion_p > 0:
            length = (_odd(motion_length[0] * s), _odd(motion_length[1] * s))
            steps.append(K.RandomMotionBlur(length, 180.0, 0.0, border_type="reflect", p=motion_p))
        if resample_p > 0:
            steps.append(RandomResample(tuple(resample), p=resample_p))
        if noise_p > 0:
            steps.append(K.RandomGaussianNoise(std=noise_std, p=noise_p))
        if jpeg_p > 0:
            steps.append(RandomJPEG(tuple(jpeg_quality), p=jpeg_p))
        self.steps = nn.ModuleList(steps)

    def share_at(self, epoch: int | None) -> float:
        """The fraction of images augmented at ``epoch`` (None: outside a training loop, the full share)."""
        if epoch is None or self.ramp_epochs == 0:
            return self.share
        return self.share * min(1.0, epoch / self.ramp_epochs)

    def forward(self, x: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        share = self.share_at(epoch)
        if share < 1.0:
            pick = (torch.rand(len(x), device=x.device) < share).nonzero().flatten()
            out = x.clone()
            if len(pick):
                out[pick] = self._augment(x[pick])
            return out
        return self._augment(x)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:  # not `_apply`: nn.Module.to() calls that one
        for step in self.steps:
            x = step(x).clamp(0, 1)  # noise and bicubic resampling overshoot; the next step expects [0, 1]
        return x
