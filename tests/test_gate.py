"""The "not a blood-cell image" gate's numbers: its score, its fit on awkward features, its threshold, its warning."""

import pytest
import torch

from bloodcls.uncertainty.ood import (
    MIN_FAR_OOD_AUROC,
    accept_threshold,
    fit_mahalanobis,
    gate_scores,
    gate_warning,
    mahalanobis_score,
)

CLASSES, DEAD = 8, 8


def _features(labels: torch.Tensor, g: torch.Generator, dim: int, alive: float = 0.0) -> torch.Tensor:
    """ReLU features of a class-structured network whose first DEAD units are dead on the training images
    (``alive=0``) and switch on slightly, with probability ``alive``, on other in-distribution images."""
    centres = 3 * torch.randn(CLASSES, dim, generator=torch.Generator().manual_seed(1))
    mixing = torch.randn(dim, 8, generator=torch.Generator().manual_seed(2))
    n = len(labels)
    f = torch.relu(torch.randn(n, 8, generator=g) @ mixing.T + 0.5 * torch.randn(n, dim, generator=g)
                   + centres[labels] + 2)
    f[:, :DEAD] = (torch.rand(n, DEAD, generator=g) < alive).float() * torch.rand(n, DEAD, generator=g)
    return f


def _outliers(n: int, g: torch.Generator, dim: int) -> torch.Tensor:
    f = torch.relu(4 * torch.randn(n, dim, generator=g) + 2)
    f[:, :DEAD] = 0
    return f


def _auroc(per_class: int, dim: int, alive: float) -> float:
    """The gate's AUROC, fitted on ``per_class`` images per class, between clean images and outliers."""
    g = torch.Generator().manual_seed(0)
    train_labels = torch.arange(per_class * CLASSES) % CLASSES
    stats = fit_mahalanobis(_features(train_labels, g, dim), train_labels)
    score = lambda f: mahalanobis_score(f, stats["means"], stats["precision"])  # noqa: E731
    clean = _features(torch.arange(800) % CLASSES, g, dim, alive)
    return gate_scores(score(clean), score(_outliers(400, g, dim)))["auroc"]


def test_units_dead_on_the_training_images_do_not_break_the_gate():
    # pytorch-ood's unnormalised sum + 1e-6 I weighs a dead unit's slightest activation a million-fold:
    # AUROC 0.43 here (a trained network's gate let 20 % of non-cell images through, issue 30).
    assert _auroc(per_class=500, dim=64, alive=0.1) >= 0.99


@pytest.mark.parametrize("per_class", [10, 20])
def test_the_gate_stays_meaningful_with_few_images_per_class(per_class):
    # 80 or 160 images against 128 features: the plain covariance is singular (AUROC 0.30 at 10 per class
    # with pytorch-ood's fit) or barely invertible; the shrunk one is neither.
    assert _auroc(per_class=per_class, dim=128, alive=0.0) >= 0.99


def test_constant_units_give_a_finite_well_conditioned_precision():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % CLASSES
    feats = _features(labels, g, dim=64)
    feats[:, DEAD:DEAD + 4] = 7.0  # constant, not zero
    stats = fit_mahalanobis(feats, labels)
    assert stats["precision"].dtype == torch.float32 and torch.isfinite(stats["precision"]).all()
    assert float(torch.linalg.cond(stats["precision"].double())) < 1e6 and 0 < stats["shrinkage"] < 1
    assert torch.isfinite(mahalanobis_score(_outliers(10, g, 64), stats["means"], stats["precision"])).all()


def test_fit_names_a_missing_class():
    with pytest.raises(ValueError, match="every class"):
        fit_mahalanobis(torch.randn(6, 4), torch.tensor([0, 0, 2, 2, 2, 0]))


def test_score_is_half_the_squared_distance_to_the_nearest_class_mean():
    from sklearn.covariance import LedoitWolf

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 3
    feats = torch.randn(600, 5, generator=g) + 3 * torch.nn.functional.one_hot(labels, 5).float()
    stats = fit_mahalanobis(feats, labels)
    means = torch.stack([feats[labels == c].double().mean(0) for c in range(3)])
    ref = LedoitWolf(assume_centered=True).fit((feats.double() - means[labels]).numpy())
    new = torch.randn(50, 5, generator=g)
    expected = torch.stack([torch.from_numpy(ref.mahalanobis((new.double() - m).numpy())) for m in means]).min(0).values
    assert torch.allclose(mahalanobis_score(new, stats["means"], stats["precision"]).double(), 0.5 * expected,
                          rtol=1e-5)


def test_the_threshold_accepts_95_percent_with_95_percent_confidence():
    g = torch.Generator().manual_seed(0)
    passed = []
    for _ in range(40):
        val, fresh = torch.randn(1000, generator=g), torch.randn(20000, generator=g)
        passed.append(float((fresh <= accept_threshold(val)).double().mean()))
    assert sum(p >= 0.95 for p in passed) >= 34 and min(passed) > 0.94  # ~95 % confidence, never far below


def test_a_weak_gate_is_named_with_what_to_do():
    assert gate_warning(MIN_FAR_OOD_AUROC) is None and gate_warning(0.9991) is None
    text = gate_warning(0.8097)
    assert "0.8097" in text and "below 0.99" in text and "--refit" in text


def _weak_report() -> dict:
    auroc = 0.8097
    return {"test_acc": 0.9585, "calibration": {"before": {"ece": 0.1}, "after": {"ece": 0.01}},
            "gate": {"far_ood": {"all": {"auroc": auroc, "n_ood": 90, "fires": 64 / 90, "turned_away": 64}},
                     "fires_on_test": 0.05, "warning": gate_warning(auroc)}}


def test_training_logs_a_weak_gate(monkeypatch, caplog):
    from types import SimpleNamespace

    import bloodcls.training.trust as training_trust

    monkeypatch.setattr(training_trust, "fit_trust", lambda *a, **k: (SimpleNamespace(temperature=1.0), _weak_report()))
    trainer = SimpleNamespace(datamodule=SimpleNamespace(splits={"train": None}), callbacks=[], is_global_zero=False)
    with caplog.at_level("WARNING", logger=training_trust.__name__):
        training_trust.FitTrust().on_test_end(trainer, SimpleNamespace(net=None))
    assert any(r.levelname == "WARNING" and "0.8097" in r.getMessage() for r in caplog.records)


def test_the_trust_command_prints_a_weak_gate():
    from bloodcls.analysis.trust_report import ROWS, run_line, trust_table

    summary = {**{key: 0.5 for _, key, _ in ROWS}, "trust/far_ood_auroc": 0.8097}
    from bloodcls.common.records import TrustRecord

    record = TrustRecord(run="outputs/r", experiment="baseline_64", recipe="strong", summary=summary,
                         report=_weak_report())
    line = run_line(record)
    assert "far-OOD AUROC 0.8097" in line and "WARNING" in line and "--refit" in line
    assert "accuracy 95.85 % on all test images" in line and "64 of 90 far-OOD images turned away" in line
    assert "| accuracy on all test images (%) |" in trust_table([record])
    assert "WARNING" in trust_table([record]) and "outputs/r: far-OOD AUROC 0.8097" in trust_table([record])
    strong = TrustRecord(**{**record.__dict__, "summary": {**summary, "trust/far_ood_auroc": 0.999}})
    assert "WARNING" not in trust_table([strong])
