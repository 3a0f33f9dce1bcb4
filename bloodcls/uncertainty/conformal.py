"""Split conformal prediction sets: per image the classes that, together, hold the true one 90 % of the time.

Scores as TorchCP defines them (``torchcp/classification/score/aps.py`` and ``raps.py``): APS (Romano et al.,
2020) sorts the calibrated probabilities, and a class scores the cumulative probability up to and including it,
minus ``U * p_class`` when randomized (U uniform on [0, 1]); RAPS (Angelopoulos et al., 2021) adds
``penalty * max(rank - kreg, 0)`` (rank 1 = the top class), which keeps sets small. The threshold is TorchCP's
``calculate_conformal_value``: the ``ceil((n+1)(1-alpha))/n`` quantile of the n calibration images' label scores
with ``higher`` interpolation; a set holds the classes whose score is <= it. For exchangeable images the set then
holds the true class with probability >= 1 - alpha (``coverage``); randomized scores also keep it under
1 - alpha + 1/(n+1) (a little more with the quantile's ``higher`` convention).

Default: APS, not randomized, so an image gets the same set each time it is classified; non-randomized sets are
conservative (coverage >= 1 - alpha, often a little above). TorchCP itself is not a dependency: its install
pulls transformers, torch_geometric and torchsort (a compiled extension) into every bloodcls install, for these
twenty lines of tensor maths; tests/test_conformal.py checks the scores on hand-computed cases.

One departure, shown to users only: a set is never empty. An image more confident than the calibration images
needed scores every class, its top one included, above the threshold; its set is then the top class alone (a
superset of the empty set, so coverage only rises). ``nonempty=False`` gives TorchCP's sets exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bloodcls.errors import UserError

METHODS = ("aps", "raps")
DEFAULT_METHOD = "aps"
DEFAULT_COVERAGE = 0.9
# RAPS regulariser: each class beyond the first `kreg` costs `penalty` (Angelopoulos et al. tune 0.01 and 5 for
# ImageNet's 1000 classes; 8 classes need a larger penalty to change anything)
RAPS_PENALTY = 0.1
RAPS_KREG = 1
_ROUNDING = 1e-9  # (n+1) * coverage computed in floating point: 10 * 0.9 must count as 9, not 9.000000000000002


def class_scores(proba: torch.Tensor, method: str = DEFAULT_METHOD, randomized: bool = False, penalty: float = 0.0,
                 kreg: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """N x C non-conformity scores of every class (TorchCP's ``_calculate_all_label``; larger = less plausible)."""
    proba = proba.detach().double()
    ordered, order = torch.sort(proba, dim=1, descending=True, stable=True)  # ties: lower class first
    scores = ordered.cumsum(1)
    if randomized:
        scores = scores - ordered * torch.rand(proba.shape, generator=generator, dtype=proba.dtype)
    if method == "raps":
        rank = torch.arange(1, proba.shape[1] + 1, dtype=proba.dtype)
        scores = scores + (penalty * (rank - kreg)).clamp_min(0)
    elif method != "aps":
        raise ValueError(f"unknown conformal method {method!r}; use one of {METHODS}")
    return torch.empty_like(scores).scatter_(1, order, scores)  # back from rank order to class order


def min_calibration_images(coverage: float) -> int:
    """The fewest calibration images for which ``coverage`` has a finite threshold: (n+1) * coverage <= n."""
    check_coverage(coverage)
    return max(1, math.ceil(coverage / (1 - coverage) - _ROUNDING))


def check_coverage(coverage: float) -> None:
    if not 0 < coverage < 1:
        raise UserError(f"Coverage {coverage} is outside (0, 1): give the share of images whose set should hold the "
                        f"true class as a number between 0 and 1, e.g. 0.9 for 90 %.")


def conformal_threshold(scores: torch.Tensor, coverage: float) -> float:
    """TorchCP's ``calculate_conformal_value``: the ceil((n+1) coverage)/n quantile, ``higher`` interpolation.
    Too few scores for ``coverage`` is a UserError that says how many are needed."""
    n = len(scores)
    need = min_calibration_images(coverage)
    if n < need:
        raise UserError(f"{n} labelled image(s) are too few for prediction sets with {100 * coverage:g} % coverage: "
                        f"split conformal needs (n+1) x {coverage:g} <= n, i.e. at least {need} images. Add "
                        f"images, or ask for a lower coverage.")
    q = math.ceil((n + 1) * coverage - _ROUNDING) / n
    return float(torch.quantile(scores.detach().double(), min(q, 1.0), interpolation="higher"))


@dataclass
class ConformalSets:
    """A fitted conformal threshold, stored in the trust state as plain values (weights-only loading works)."""

    method: str  # "aps" or "raps"
    coverage: float  # 1 - alpha: the share of images whose set holds the true class
    threshold: float
    n_calibration: int  # images the threshold was fitted on
    randomized: bool = False
    penalty: float = 0.0  # RAPS only
    kreg: int = 0  # RAPS only

    @classmethod
    def fit(cls, proba: torch.Tensor, labels: torch.Tensor, coverage: float = DEFAULT_COVERAGE,
            method: str = DEFAULT_METHOD, randomized: bool = False, generator: torch.Generator | None = None,
            ) -> ConformalSets:
        """The threshold from calibrated probabilities and true labels of images the network never trained on."""
        check_coverage(coverage)
        penalty, kreg = (RAPS_PENALTY, RAPS_KREG) if method == "raps" else (0.0, 0)
        scores = class_scores(proba, method, randomized, penalty, kreg, generator)
        label_scores = scores.gather(1, labels.long().view(-1, 1)).flatten()
        return cls(method=method, coverage=float(coverage), threshold=conformal_threshold(label_scores, coverage),
                   n_calibration=len(label_scores), randomized=randomized, penalty=penalty, kreg=kreg)

    def sets(self, proba: torch.Tensor, nonempty: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """N x C bool: the classes in each image's set (see the module notes on ``nonempty``)."""
        scores = class_scores(proba, self.method, self.randomized, self.penalty, self.kreg, generator)
        inside = scores <= self.threshold
        if nonempty:
            top = torch.zeros_like(inside).scatter_(1, proba.argmax(1, keepdim=True), True)
            inside = torch.where(inside.any(1, keepdim=True), inside, top)
        return inside

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, str | bool | int) else float(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ConformalSets | None:
        return cls(**d) if d else None


def set_scores(inside: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Empirical coverage (share of images whose set holds the true class), mean set size, share of single-class
    sets."""
    size = inside.sum(1).double()
    return {"coverage": float(inside.gather(1, labels.long().view(-1, 1)).double().mean()),
            "mean_size": float(size.mean()), "singletons": float((size == 1).double().mean())}
