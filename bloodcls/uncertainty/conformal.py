"""Split conformal prediction sets: per image the classes that, together, hold the true one 90 % of the time.

Scores as TorchCP defines them (``torchcp/classification/score/{lac,aps,raps}.py``), on calibrated probabilities:
LAC (TorchCP's THR/LAC, Sadinle et al., 2016) scores a class ``1 - p_class``; APS (Romano et al., 2020) sorts the
probabilities, and a class scores the cumulative probability up to and including it, minus ``U * p_class`` when
randomized (U uniform on [0, 1], one per image and class as TorchCP draws them); RAPS (Angelopoulos et al., 2021)
adds ``penalty * max(rank - kreg, 0)`` (rank 1 = the top class). A set holds the classes whose score is <= the
threshold (TorchCP's ``_generate_prediction_set``).

The threshold is the exact finite-sample quantile: the ``ceil((n+1)(1-alpha))``-th smallest of the n calibration
images' label scores, so the set holds the true class of a new exchangeable image with probability >= 1 - alpha
(Vovk et al.; Angelopoulos & Bates, 2021). TorchCP's ``higher`` quantile at level ``ceil((n+1)(1-alpha))/n`` lands
one rank above it. Class-conditional (Mondrian) sets (TorchCP's ``ClassConditionalPredictor``) fit one threshold
per class on that class's images, so every class, the rarest included, gets the coverage asked.

Randomisation is seeded per image: the uniforms come from numpy's generator seeded by a hash of the image's
probabilities (rounded to 1e-6), so one image always gets one set, and the guarantee holds (the same function of
each image, so the calibration and test images stay exchangeable). TorchCP itself is not a dependency: it pulls
transformers, torch_geometric and torchsort (a compiled extension) into every install for these lines of tensor
maths; tests/test_conformal.py checks them on hand-computed cases.

One departure, shown to users only: a set always holds the predicted (top) class. With one threshold the top class
scores lowest, so this only fills an empty set (an image more confident than the calibration images needed);
with per-class thresholds it can add the top class. A superset, so coverage only rises; ``with_top=False`` gives
TorchCP's sets exactly.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from bloodcls.errors import UserError

METHODS = ("lac", "aps", "raps")
# The default score (docs/results/prediction-sets.md, scripts/set_scores.py: chosen on validation, reported on test).
# The rule (smallest sets whose worst class keeps 85 % at a 90 % target) picks LAC on all six evidence models:
# three recipe=study baseline_64 seeds (test: 96.6 % coverage, 1.00 classes, worst class 90.6 %) and three
# baseline_64_robust recipe=strong seeds (95.9 %, 1.00, 89.9 %). Plain APS takes 3.45-4.35 classes, because a
# confident model's APS score is its whole probability mass; `randomized` applies to APS and RAPS only.
DEFAULT_METHOD = "lac"
DEFAULT_RANDOMIZED = True
DEFAULT_COVERAGE = 0.9
# RAPS regulariser: each class beyond the first `kreg` costs `penalty` (Angelopoulos et al. tune 0.01 and 5 for
# ImageNet's 1000 classes; 8 classes need a larger penalty to change anything; scripts/set_scores.py tunes them)
RAPS_PENALTY = 0.1
RAPS_KREG = 1
_ROUNDING = 1e-9  # (n+1) * coverage computed in floating point: 10 * 0.9 must count as 9, not 9.000000000000002
_HASH_DECIMALS = 6  # probabilities rounded before hashing, so float noise does not change an image's draws


@dataclass(frozen=True)
class SetOptions:
    """How prediction sets are fitted: the coverage asked, the score and whether one threshold per class."""

    coverage: float = DEFAULT_COVERAGE
    method: str = DEFAULT_METHOD
    randomized: bool = DEFAULT_RANDOMIZED
    per_class: bool = False
    penalty: float = RAPS_PENALTY  # RAPS only
    kreg: int = RAPS_KREG  # RAPS only

    def __post_init__(self) -> None:
        check_coverage(self.coverage)
        if self.method not in METHODS:
            raise UserError(f"Unknown prediction-set score {self.method!r}: use one of {', '.join(METHODS)}.")


def image_uniforms(proba: torch.Tensor) -> torch.Tensor:
    """N x C uniforms on [0, 1): per image, numpy's default generator seeded by a BLAKE2 hash of its rounded
    probabilities, so the same image always draws the same numbers."""
    rounded = np.round(proba.detach().double().cpu().numpy(), _HASH_DECIMALS) + 0.0  # + 0.0: -0.0 hashes as 0.0
    out = np.empty(rounded.shape, dtype=np.float64)
    for i, row in enumerate(rounded):
        seed = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
        out[i] = np.random.default_rng(seed).random(rounded.shape[1])
    return torch.from_numpy(out)


def class_scores(proba: torch.Tensor, method: str, randomized: bool = False, penalty: float = 0.0,
                 kreg: int = 0, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """N x C non-conformity scores of every class (TorchCP's ``_calculate_all_label``; larger = less plausible).
    ``uniforms`` (N x C, by rank as TorchCP applies them): the draws of randomized APS/RAPS, per image from its
    probabilities (:func:`image_uniforms`) when not given."""
    proba = proba.detach().double().cpu()
    if method == "lac":
        return 1 - proba
    if method not in METHODS:
        raise ValueError(f"unknown conformal method {method!r}; use one of {METHODS}")
    ordered, order = torch.sort(proba, dim=1, descending=True, stable=True)  # ties: lower class first
    scores = ordered.cumsum(1)
    if randomized:
        u = image_uniforms(proba) if uniforms is None else uniforms.double().cpu()
        scores = scores - ordered * u
    if method == "raps":
        rank = torch.arange(1, proba.shape[1] + 1, dtype=proba.dtype)
        scores = scores + (penalty * (rank - kreg)).clamp_min(0)
    return torch.empty_like(scores).scatter_(1, order, scores)  # back from rank order to class order


def min_calibration_images(coverage: float) -> int:
    """The fewest calibration images for which ``coverage`` has a finite threshold: (n+1) * coverage <= n."""
    check_coverage(coverage)
    return max(1, math.ceil(coverage / (1 - coverage) - _ROUNDING))


def check_coverage(coverage: float) -> None:
    if not 0 < coverage < 1:
        raise UserError(f"Coverage {coverage} is outside (0, 1): give the share of images whose set should hold the "
                        f"true class as a number between 0 and 1, e.g. 0.9 for 90 %.")


def conformal_rank(n: int, coverage: float) -> int:
    """The finite-sample rank k = ceil((n+1) coverage): the k-th smallest of n scores is the threshold."""
    return math.ceil((n + 1) * coverage - _ROUNDING)


def conformal_threshold(scores: torch.Tensor, coverage: float) -> float:
    """The ``ceil((n+1) coverage)``-th smallest score. Too few scores for ``coverage`` is a UserError that says
    how many are needed."""
    n = len(scores)
    need = min_calibration_images(coverage)
    if n < need:
        raise UserError(f"{n} labelled image(s) are too few for prediction sets with {100 * coverage:g} % coverage: "
                        f"split conformal needs (n+1) x {coverage:g} <= n, i.e. at least {need} images. Add "
                        f"images, or ask for a lower coverage.")
    return float(torch.sort(scores.detach().double().cpu()).values[conformal_rank(n, coverage) - 1])


def check_class_counts(counts: list[int], coverage: float, class_names: list[str] | None = None) -> None:
    """Refuse class-conditional sets when a class has fewer images than ``coverage`` needs (one paragraph naming
    each such class, its count and the count it needs)."""
    need = min_calibration_images(coverage)
    names = class_names or [f"class {c}" for c in range(len(counts))]
    short = [f"{names[c]} has {n}" for c, n in enumerate(counts) if n < need]
    if short:
        raise UserError(f"Class-conditional prediction sets at {100 * coverage:g} % coverage need at least {need} "
                        f"labelled images of every class ((n+1) x {coverage:g} <= n per class), but "
                        f"{'; '.join(short)}. Add images of {'that class' if len(short) == 1 else 'those classes'}, "
                        "ask for a lower coverage, or fit one threshold for all classes (no --per-class / "
                        "callbacks.trust.per_class=false).")


@dataclass
class ConformalSets:
    """A fitted conformal threshold (or one per class), stored in the trust state as plain values."""

    method: str  # "lac", "aps" or "raps"
    coverage: float  # 1 - alpha: the share of images whose set holds the true class
    threshold: float | None  # the one threshold; None for class-conditional sets
    n_calibration: int  # images the threshold was fitted on
    randomized: bool = False
    penalty: float = 0.0  # RAPS only
    kreg: int = 0  # RAPS only
    class_thresholds: list[float] | None = None  # class-conditional (Mondrian): one per class, in the model's order
    class_counts: list[int] | None = None  # class-conditional: the calibration images of each class

    @property
    def per_class(self) -> bool:
        return self.class_thresholds is not None

    @classmethod
    def fit(cls, proba: torch.Tensor, labels: torch.Tensor, options: SetOptions | None = None,
            class_names: list[str] | None = None) -> ConformalSets:
        """The threshold(s) from calibrated probabilities and true labels of images the network never trained
        on; ``class_names`` name the classes in a refusal."""
        o = options or SetOptions()
        penalty, kreg = (float(o.penalty), int(o.kreg)) if o.method == "raps" else (0.0, 0)
        randomized = o.randomized and o.method != "lac"
        scores = class_scores(proba, o.method, randomized, penalty, kreg)
        labels = labels.long().cpu().flatten()
        label_scores = scores.gather(1, labels.view(-1, 1)).flatten()
        fitted = cls(method=o.method, coverage=float(o.coverage), threshold=None, n_calibration=len(labels),
                     randomized=randomized, penalty=penalty, kreg=kreg)
        if not o.per_class:
            fitted.threshold = conformal_threshold(label_scores, o.coverage)
            return fitted
        counts = torch.bincount(labels, minlength=proba.shape[1]).tolist()
        check_class_counts(counts, o.coverage, class_names)
        fitted.class_counts = counts
        fitted.class_thresholds = [conformal_threshold(label_scores[labels == c], o.coverage)
                                   for c in range(proba.shape[1])]
        return fitted

    def thresholds(self, n_classes: int) -> torch.Tensor:
        """1 x C: each class's threshold (the one threshold repeated, or the per-class ones)."""
        values = self.class_thresholds if self.per_class else [self.threshold] * n_classes
        if len(values) != n_classes:
            raise ValueError(f"{len(values)} class thresholds for {n_classes} classes")
        return torch.tensor(values, dtype=torch.float64).view(1, -1)

    def sets(self, proba: torch.Tensor, with_top: bool = True) -> torch.Tensor:
        """N x C bool: the classes in each image's set (see the module notes on ``with_top``)."""
        scores = class_scores(proba, self.method, self.randomized, self.penalty, self.kreg)
        inside = scores <= self.thresholds(proba.shape[1])
        if with_top:
            inside[torch.arange(len(proba)), proba.argmax(1).cpu()] = True
        return inside

    def describe(self) -> str:
        """``randomized APS, class-conditional``: the score as a reader names it."""
        name = {"lac": "LAC", "aps": "APS", "raps": f"RAPS (penalty {self.penalty:g}, kreg {self.kreg})"}[self.method]
        return f"{'randomized ' if self.randomized else ''}{name}{', class-conditional' if self.per_class else ''}"

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return v if v is None or isinstance(v, str | bool | int | list) else float(v)

        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ConformalSets | None:
        return cls(**d) if d else None
