"""Conformal prediction sets: TorchCP's APS/RAPS scores, their coverage guarantee, and where sets are fitted,
stored and shown (training, `bloodcls calibrate`, predict)."""

import json

import pytest
import torch

from bloodcls.errors import UserError
from bloodcls.uncertainty.conformal import (
    ConformalSets,
    class_scores,
    conformal_threshold,
    min_calibration_images,
    set_scores,
)

PROBA = torch.tensor([[0.1, 0.4, 0.5], [0.3, 0.3, 0.4]], dtype=torch.float64)  # TorchCP's docstring example


def test_aps_and_raps_scores_equal_hand_computed_values():
    # row 0 sorted: 0.5 (class 2), 0.4 (class 1), 0.1 (class 0): cumulative 0.5, 0.9, 1.0
    assert class_scores(PROBA[:1]).tolist()[0] == pytest.approx([1.0, 0.9, 0.5])
    # RAPS, penalty 0.1 from rank 2 on (kreg 1): ranks 3, 2, 1 pay 0.2, 0.1, 0
    raps = class_scores(PROBA[:1], "raps", penalty=0.1, kreg=1)
    assert raps.tolist()[0] == pytest.approx([1.2, 1.0, 0.5])
    # randomized: cumulative minus U * p, with U = 1 the cumulative up to the class before
    ones = torch.Generator().manual_seed(0)
    rand = class_scores(PROBA[:1], randomized=True, generator=ones)
    u = torch.rand((1, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)[0].tolist()
    assert rand.tolist()[0] == pytest.approx([1.0 - u[2] * 0.1, 0.9 - u[1] * 0.4, 0.5 - u[0] * 0.5])


def test_threshold_is_torchcps_higher_quantile_and_sets_hold_scores_below_it():
    scores = torch.arange(1, 11, dtype=torch.float64) / 10  # 0.1 .. 1.0, n = 10
    # ceil(11 * 0.8) / 10 = 0.9 -> position 0.9 * 9 = 8.1 -> 'higher': index 9
    assert conformal_threshold(scores, 0.8) == pytest.approx(1.0)
    assert conformal_threshold(scores, 0.5) == pytest.approx(0.7)  # ceil(5.5) / 10 = 0.6 -> 5.4 -> index 6
    fitted = ConformalSets("aps", 0.9, threshold=0.95, n_calibration=10)
    # row 1 scores 0.7, 1.0, 0.4 (the tie of 0.3s ranked by class index)
    assert fitted.sets(PROBA).tolist() == [[False, True, True], [True, False, True]]
    tiny = ConformalSets("aps", 0.9, threshold=0.45, n_calibration=10)  # the top class alone scores above it
    assert tiny.sets(PROBA, nonempty=False).tolist() == [[False, False, False], [False, False, True]]
    assert tiny.sets(PROBA).tolist() == [[False, False, True], [False, False, True]]  # never empty when shown
    assert set_scores(fitted.sets(PROBA), torch.tensor([1, 1])) == {"coverage": 0.5, "mean_size": 2.0,
                                                                   "singletons": 0.0}


def _softmax_model(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of a known 8-class model and labels drawn from them: the model is exactly calibrated."""
    g = torch.Generator().manual_seed(seed)
    proba = (2.0 * torch.randn(n, 8, generator=g, dtype=torch.float64)).softmax(1)
    return proba, torch.multinomial(proba, 1, generator=g).flatten()


@pytest.mark.parametrize("method", ["aps", "raps"])
def test_sets_cover_fresh_images_at_the_promised_rate(method):
    n, coverage, tol = 5000, 0.9, 0.01
    covered = {False: [], True: []}
    for seed in range(4):
        cal, test = _softmax_model(n, seed), _softmax_model(n, 100 + seed)
        for randomized in (False, True):
            g = torch.Generator().manual_seed(seed)
            sets = ConformalSets.fit(*cal, coverage, method, randomized, generator=g)
            inside = sets.sets(test[0], nonempty=False, generator=g)
            covered[randomized].append(set_scores(inside, test[1])["coverage"])
    for c in covered[False] + covered[True]:  # each seed: at least 1 - alpha, up to the two draws' noise
        assert c >= coverage - 3 * (2 * coverage * (1 - coverage) / n) ** 0.5
    mean = {k: sum(v) / len(v) for k, v in covered.items()}
    assert coverage - tol <= mean[True] <= coverage + 1 / (n + 1) + tol  # randomized: tight
    assert mean[False] >= mean[True] - tol  # not randomized: conservative


@pytest.mark.parametrize("coverage, need", [(0.9, 9), (0.95, 19), (0.5, 1), (0.8, 4)])
def test_too_few_images_are_refused_with_the_number_needed(coverage, need):
    assert min_calibration_images(coverage) == need
    proba, labels = _softmax_model(need, 0)
    ConformalSets.fit(proba, labels, coverage)  # exactly enough works
    if need > 1:
        with pytest.raises(UserError, match=f"at least {need} images"):
            ConformalSets.fit(proba[:-1], labels[:-1], coverage)


@pytest.mark.parametrize("coverage", [0.0, 1.0, 1.5, -0.1])
def test_a_coverage_outside_zero_one_is_refused(coverage):
    with pytest.raises(UserError, match=r"outside \(0, 1\)"):
        min_calibration_images(coverage)


def test_training_fits_sets_and_predict_shows_them(reference_run, synthetic_root, tmp_path, capsys):
    from PIL import Image

    from bloodcls.cli.predict import main as predict_main
    from bloodcls.data import load_npz
    from bloodcls.inference.checkpoint import load_trained

    run, results = reference_run
    sets = results["trust"]["sets"]
    assert sets["target_coverage"] == 0.9 and 0 <= sets["coverage"] <= 1 and 1 <= sets["mean_size"] <= 8
    ckpt = run / "checkpoints" / "best.ckpt"
    model = load_trained(ckpt)
    assert model.trust.conformal.n_calibration == 48  # the synthetic validation split
    test = load_npz(synthetic_root / "bloodmnist.npz")["test"][0]
    for i in range(3):
        Image.fromarray(test[i]).save(tmp_path / f"cell{i}.png")
    assert predict_main([str(ckpt), str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["set_coverage"] == 0.9
    for row in out["results"]:
        assert row["class"] in row["prediction_set"] and set(row["prediction_set"]) <= set(model.class_names)
