"""Seeded, stratified samples of a split: the same images for the same seed, each class in its split's share.

Used wherever a subset of a split stands for all of it (the images precise BatchNorm statistics are
recomputed from). Taking the first N images instead is wrong on a folder dataset, whose arrays are in
class order: the first N images are the first classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_sample(labels: Sequence[int] | np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of ``n`` items of ``labels`` drawn at random per class, class counts in the labels' proportions.

    Each class gets its share of ``n`` rounded by largest remainder (so the counts sum to ``n``) and at least one
    item where ``n`` allows one per class. The indices come shuffled (classes mixed, as in a training batch) and
    depend only on ``labels``, ``n`` and ``seed``. ``n`` of None, or at least ``len(labels)``: every index.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    if n is None or n >= len(labels):
        return rng.permutation(len(labels))
    if n < 1:
        raise ValueError(f"a sample needs at least one item, got n={n}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(int)
    if n >= len(classes):
        take = np.maximum(take, 1)
    # hand out what is left by largest remainder, or take back from the classes furthest above their share
    while take.sum() < n:
        room = np.where(take < counts, exact - take, -np.inf)
        take[int(np.argmax(room))] += 1
    while take.sum() > n:
        over = np.where(take > 1, take - exact, -np.inf)
        take[int(np.argmax(over))] -= 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take, strict=True)]
    return rng.permutation(np.concatenate(picked))
