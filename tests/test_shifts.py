"""Every shift moves the image in its intended direction, grows with severity and is the identity at 0."""

import pytest
import torch

from bloodcls.robustness.shifts import SEVERITIES, SHIFTS, quantize
from tests.synthetic import synthetic_split

REQUIRED = {"brightness_down", "brightness_up", "contrast_down", "contrast_up", "saturation_down", "saturation_up",
            "hue", "gamma", "gaussian_blur", "motion_blur", "noise", "jpeg", "resample"}
RANDOM = ("hue", "gamma", "motion_blur", "noise")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """8 cell-like 64 px images (coloured blob on a textured background), float in [0, 1]."""
    x, _ = synthetic_split(1, 64, seed=3)
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)


def _graded(images, name, seed=0):
    return [SHIFTS[name](images, s, torch.Generator().manual_seed(seed)) for s in (0, *SEVERITIES)]


def _mean(x):
    return x.mean().item()


def _std(x):
    return x.std(dim=(1, 2, 3)).mean().item()


def _spread(x):  # colourfulness: channel max minus channel min
    return (x.amax(1) - x.amin(1)).mean().item()


def _high_freq(x):  # energy of neighbour differences
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean().item() + ((x[..., 1:] - x[..., :-1]) ** 2).mean().item()


def _error(x, ref):
    return (x - ref).abs().mean().item()


def _strictly(values, increasing):
    pairs = list(zip(values, values[1:], strict=False))
    return all(b > a for a, b in pairs) if increasing else all(b < a for a, b in pairs)


def test_suite_covers_the_issue_with_five_levels_each():
    assert REQUIRED <= set(SHIFTS)
    for shift in SHIFTS.values():
        assert len(shift.levels) == len(SEVERITIES) == 5


@pytest.mark.parametrize("name", list(SHIFTS))
def test_identity_at_zero_and_valid_images_at_every_severity(images, name):
    assert SHIFTS[name](images, 0) is images
    for severity, y in enumerate(_graded(images, name)):
        assert y.shape == images.shape and y.dtype == images.dtype
        assert 0 <= y.min() and y.max() <= 1
        assert torch.equal(y, quantize(y))  # stored as an 8-bit image would be
        if severity:
            assert not torch.equal(y, images), f"{name}@{severity} left the images unchanged"
    with pytest.raises(ValueError):
        SHIFTS[name](images, 6)


@pytest.mark.parametrize(("name", "measure", "increasing"), [
    ("brightness_down", _mean, False),
    ("brightness_up", _mean, True),
    ("contrast_down", _std, False),
    ("contrast_up", _std, True),
    ("saturation_down", _spread, False),
    ("saturation_up", _spread, True),
    ("gaussian_blur", _high_freq, False),
    ("motion_blur", _high_freq, False),
    ("resample", _high_freq, False),
])
def test_direction_grows_with_severity(images, name, measure, increasing):
    values = [measure(y) for y in _graded(images, name)]
    assert _strictly(values, increasing), (name, values)


@pytest.mark.parametrize("name", ["contrast_down", "contrast_up", "saturation_down", "saturation_up", "hue",
                                  "gaussian_blur", "motion_blur", "noise", "resample"])
def test_shifts_that_keep_mean_intensity(images, name):
    for y in _graded(images, name):
        assert abs(_mean(y) - _mean(images)) < 0.01


@pytest.mark.parametrize("name", ["hue", "gamma", "noise", "jpeg"])
def test_distance_from_the_original_grows_with_severity(images, name):
    values = [_error(y, images) for y in _graded(images, name)]
    assert _strictly(values, increasing=True), (name, values)


def test_hue_rotates_colour_but_leaves_grey_alone(images):
    grey = images.mean(1, keepdim=True).expand_as(images).contiguous()
    grey = quantize(grey)
    assert torch.equal(SHIFTS["hue"](grey, 5), grey)
    shifted = SHIFTS["hue"](images, 5)
    assert abs(_spread(shifted) - _spread(images)) < 0.01  # colourfulness kept, colour changed
    assert _error(shifted, images) > 0.02


def test_gamma_darkens_or_lightens_each_whole_image(images):
    y = SHIFTS["gamma"](images, 4)
    darker = (y <= images + 1 / 255).flatten(1).all(1)
    lighter = (y >= images - 1 / 255).flatten(1).all(1)
    assert (darker | lighter).all()  # a monotone tone curve per image, one way or the other
    assert darker.any() and lighter.any() and not (darker & lighter).all()


def test_noise_has_the_stated_strength():
    flat = torch.full((8, 3, 64, 64), 0.5)
    for severity in SEVERITIES:
        y = SHIFTS["noise"](flat, severity)
        level = SHIFTS["noise"].levels[severity - 1]
        assert (y - flat).std().item() == pytest.approx(level, rel=0.1, abs=0.002)


def test_spatial_levels_scale_with_image_size(images):
    big = torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")
    for name in ("gaussian_blur", "motion_blur"):
        small_y = SHIFTS[name](images, 3)
        big_y = SHIFTS[name](big, 3)
        down = torch.nn.functional.avg_pool2d(big_y, 2)
        # the same physical blur: the 128 px result, shrunk, is close to the 64 px result
        assert _error(down, small_y) < 0.5 * _error(images, small_y)


@pytest.mark.parametrize("name", list(SHIFTS))
def test_deterministic_for_a_seed(images, name):
    a = SHIFTS[name](images, 3, torch.Generator().manual_seed(7))
    b = SHIFTS[name](images, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    if name in RANDOM:
        c = SHIFTS[name](images, 3, torch.Generator().manual_seed(8))
        assert not torch.equal(a, c)
