"""Graded image shifts that imitate lab variability: lighting, stain colour, focus, sensor and storage.

Every shift maps a float N x 3 x S x S batch in [0, 1] to a shifted batch at severity 0..5:
severity 0 is the identity, 1 is barely visible, 5 is severe. The pixel operations come from
torchvision (``transforms.v2.functional``) and kornia; randomness (hue/gamma direction, motion
direction, noise) is drawn on the CPU from a caller-supplied ``torch.Generator``, so the same seed
gives the same shifted images on any device. Spatial levels (blur sigma, motion length) are given
in pixels of a 64 px image and scaled with the image size, so one severity means the same physical
defocus at 64 and 128 px. Outputs are clamped and re-quantised to 8 bits, as a camera stores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import kornia.filters
import torch
import torchvision.transforms.v2.functional as TF

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 64  # spatial levels are in pixels of an image this size

ShiftFn = Callable[[torch.Tensor, float, float, torch.Generator], torch.Tensor]


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit image."""
    return x.clamp(0, 1).mul(255).round().div(255)


def _random_sign(n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g) < 0.5).to(device)


def _per_image_both_ways(x: torch.Tensor, g: torch.Generator, up: Callable, down: Callable) -> torch.Tensor:
    """Apply ``up`` to a random half of the images and ``down`` to the rest (shifts with no natural sign)."""
    sign = _random_sign(len(x), g, x.device)
    out = torch.empty_like(x)
    if sign.any():
        out[sign] = up(x[sign])
    if (~sign).any():
        out[~sign] = down(x[~sign])
    return out


def _brightness(x, level, scale, g):
    return TF.adjust_brightness(x, level)  # multiply by the factor: exposure / lamp intensity


def _contrast(x, level, scale, g):
    return TF.adjust_contrast(x, level)  # blend with the image's grey mean


def _saturation(x, level, scale, g):
    return TF.adjust_saturation(x, level)  # blend with the image's greyscale: stain intensity


def _hue(x, level, scale, g):
    # Stain colour drifts both ways (bluer or pinker): each image is rotated by +level or -level.
    return _per_image_both_ways(x, g, lambda t: TF.adjust_hue(t, level), lambda t: TF.adjust_hue(t, -level))


def _gamma(x, level, scale, g):
    # Camera response: gamma = level (darker mid-tones) or 1 / level (lighter), at random per image.
    return _per_image_both_ways(x, g, lambda t: TF.adjust_gamma(t, level), lambda t: TF.adjust_gamma(t, 1 / level))


def _gaussian_blur(x, level, scale, g):
    sigma = level * scale
    k = 2 * math.ceil(3 * sigma) + 1
    k = min(k, 2 * ((x.shape[-1] - 1) // 2) + 1)  # reflect padding needs the kernel inside the image
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


def _motion_blur(x, level, scale, g):
    k = max(3, 2 * round((level * scale - 1) / 2) + 1)  # odd length in pixels, at least 3
    angle = torch.rand(len(x), generator=g) * 180  # stage vibration in any direction
    return kornia.filters.motion_blur(x, k, angle.to(x.device, x.dtype), torch.zeros(len(x), device=x.device,
                                      dtype=x.dtype), border_type="reflect")


def _noise(x, level, scale, g):
    # Sensor noise, drawn from the CPU generator (torchvision's gaussian_noise takes no generator).
    return x + level * torch.randn(x.shape, generator=g).to(x.device, x.dtype)


def _jpeg(x, level, scale, g):
    u8 = quantize(x).mul(255).to(torch.uint8).cpu()  # torchvision's codec works on CPU uint8
    return TF.jpeg(u8, quality=int(level)).to(x.device, x.dtype).div(255)


def _resample(x, level, scale, g):
    size = x.shape[-1]
    small = max(2, round(size * level))
    low = TF.resize(x, [small, small], antialias=True)  # a lower-resolution camera ...
    return TF.resize(low, [size, size], interpolation=TF.InterpolationMode.BICUBIC)  # ... up-sampled back


@dataclass(frozen=True)
class Shift:
    """One kind of shift with its parameter at severities 1..5 (``levels``)."""

    name: str
    description: str
    levels: tuple[float, ...]
    fn: ShiftFn

    def __call__(self, x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Shift a float N x 3 x S x S batch in [0, 1]; severity 0 returns ``x`` itself."""
        if not 0 <= severity <= len(self.levels):
            raise ValueError(f"severity must be in 0..{len(self.levels)}, got {severity}")
        if severity == 0:
            return x
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        scale = x.shape[-1] / REFERENCE_SIZE
        return quantize(self.fn(x, self.levels[severity - 1], scale, g))


# Levels were set a priori, from barely visible (1) to severe (5), and are not tuned to any model.
SHIFTS: dict[str, Shift] = {s.name: s for s in (
    Shift("brightness_down", "intensity x factor (dimmer lamp)", (0.95, 0.9, 0.8, 0.7, 0.55), _brightness),
    Shift("brightness_up", "intensity x factor (brighter lamp)", (1.05, 1.1, 1.2, 1.35, 1.5), _brightness),
    Shift("contrast_down", "contrast factor", (0.95, 0.9, 0.8, 0.65, 0.5), _contrast),
    Shift("contrast_up", "contrast factor", (1.05, 1.1, 1.2, 1.4, 1.7), _contrast),
    Shift("saturation_down", "saturation factor (paler stain)", (0.9, 0.75, 0.6, 0.4, 0.2), _saturation),
    Shift("saturation_up", "saturation factor (stronger stain)", (1.1, 1.25, 1.5, 1.8, 2.2), _saturation),
    Shift("hue", "hue rotation, +-fraction of the colour circle (stain colour)", (0.01, 0.02, 0.04, 0.07, 0.1), _hue),
    Shift("gamma", "gamma or 1/gamma, random per image (camera response)", (1.1, 1.2, 1.4, 1.7, 2.0), _gamma),
    Shift("gaussian_blur", "Gaussian sigma, px at 64 px (defocus)", (0.5, 0.75, 1.0, 1.5, 2.0), _gaussian_blur),
    Shift("motion_blur", "motion kernel length, px at 64 px, random direction", (3, 5, 7, 9, 13), _motion_blur),
    Shift("noise", "Gaussian noise std on [0, 1] (sensor noise)", (0.01, 0.02, 0.04, 0.07, 0.1), _noise),
    Shift("jpeg", "JPEG quality (storage compression)", (90, 70, 50, 30, 10), _jpeg),
    Shift("resample", "down-sample to this fraction of the side and back (lower resolution)",
          (0.9, 0.75, 0.6, 0.45, 0.3), _resample),
)}


def shift_names() -> list[str]:
    return list(SHIFTS)
