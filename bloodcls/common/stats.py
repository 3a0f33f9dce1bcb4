"""Small statistics for comparing runs over seeds: mean ± std and paired significance tests."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def format_mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2, bare_single: bool = False) -> str:
    """``"mean ± std"`` (sample std) of ``values`` x ``scale``; "–" for none; only the mean for a single
    value when ``bare_single`` (the shift suite's tables) instead of "± 0.00"."""
    mean, std = mean_std([v * scale for v in values if v is not None])
    if bare_single and len(values) < 2 and not math.isnan(mean):
        return f"{mean:.{digits}f}"
    return plus_minus(mean, std, digits)


def plus_minus(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``"mean ± std"`` of figures already aggregated; "–" when there is no mean (the one home of the format)."""
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value over seeds (None with fewer than two pairs or no variance)."""
    if len(a) < 2 or len(a) != len(b):
        return None
    diff = np.asarray(a, float) - np.asarray(b, float)
    if np.allclose(diff, diff[0]):
        return None if diff[0] == 0 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def mcnemar(correct_a: Sequence, correct_b: Sequence) -> dict[str, float]:
    """Exact McNemar test of two models on the same test images, each image counted once.

    ``correct_a``/``correct_b``: per image, right (True) or wrong, or the share of a model's runs right on it; or a
    runs x images table (the seeds, or seeds and folds, of each model, all scored on the same images), averaged
    over its runs. An image counts for A (``a_only``) when A is right on it more often than B, for B (``b_only``)
    the reverse; under the null that neither is the more often right on an image, ``a_only`` is
    Binomial(a_only + b_only, 1/2) (a sign test over the images, the images being the independent draws). With one
    run each this is the textbook exact McNemar test; R runs of the same images pooled as R x N pairs would shrink
    the p-value by repetition alone, which this never does.
    """
    a, b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ValueError("McNemar needs predictions of the same images by both models")
    runs = a.shape[0] if a.ndim == 2 else 1
    if a.ndim == 2:
        a, b = a.mean(axis=0), b.mean(axis=0)
    b01, b10 = int((a > b).sum()), int((a < b).sum())
    n = b01 + b10
    p = 1.0 if n == 0 else float(stats.binomtest(b01, n, 0.5).pvalue)
    return {"a_only": b01, "b_only": b10, "n_pairs": int(a.size), "runs": runs, "pvalue": p}
