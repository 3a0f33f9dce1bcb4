"""Conformal prediction sets: TorchCP's APS/RAPS scores, their coverage guarantee, and where sets are fitted,
stored and shown (training, `bloodcls calibrate`, predict)."""

import json

import pytest
import torch

from bloodcls.errors import UserError
from bloodcls.uncertainty.conformal import (
    ConformalSets,
    SetOptions,
    check_class_counts,
    class_scores,
    conformal_rank,
    conformal_threshold,
    image_uniforms,
    min_calibration_images,
)
from bloodcls.uncertainty.set_metrics import set_scores

PROBA = torch.tensor([[0.1, 0.4, 0.5], [0.3, 0.3, 0.4]], dtype=torch.float64)  # TorchCP's docstring example


def test_lac_aps_and_raps_scores_equal_hand_computed_values():
    assert class_scores(PROBA[:1], "lac").tolist()[0] == pytest.approx([0.9, 0.6, 0.5])  # 1 - p
    # row 0 sorted: 0.5 (class 2), 0.4 (class 1), 0.1 (class 0): cumulative 0.5, 0.9, 1.0
    assert class_scores(PROBA[:1], "aps").tolist()[0] == pytest.approx([1.0, 0.9, 0.5])
    # RAPS, penalty 0.1 from rank 2 on (kreg 1): ranks 3, 2, 1 pay 0.2, 0.1, 0
    raps = class_scores(PROBA[:1], "raps", penalty=0.1, kreg=1)
    assert raps.tolist()[0] == pytest.approx([1.2, 1.0, 0.5])
    # randomized: cumulative minus U * p, one U per image and rank (TorchCP's order): ranks 1, 2, 3 draw 0.5, 0.25, 1
    u = torch.tensor([[0.5, 0.25, 1.0]], dtype=torch.float64)
    rand = class_scores(PROBA[:1], "aps", randomized=True, uniforms=u)
    assert rand.tolist()[0] == pytest.approx([1.0 - 1.0 * 0.1, 0.9 - 0.25 * 0.4, 0.5 - 0.5 * 0.5])


def test_threshold_is_the_exact_finite_sample_rank():
    scores = torch.arange(1, 11, dtype=torch.float64).flip(0) / 10  # 1.0 .. 0.1, n = 10, in any order
    # ceil(11 * 0.8) = 9: the 9th smallest score, 0.9 (TorchCP's 'higher' quantile would give the 10th, 1.0)
    assert conformal_rank(10, 0.8) == 9 and conformal_threshold(scores, 0.8) == pytest.approx(0.9)
    assert conformal_threshold(scores, 0.5) == pytest.approx(0.6)  # ceil(5.5) = 6
    assert conformal_threshold(scores, 10 / 11) == pytest.approx(1.0)  # (n+1) x 10/11 = 10 exactly: the largest


def test_a_fixed_score_list_covers_what_it_promises():
    # LAC on 2 classes: calibration label scores 1 - p_true = 0.05, 0.10, ..., 0.50 (n = 10); at coverage 0.8
    # the 9th smallest, 0.45, is the threshold: a class is in the set when its probability is >= 0.55
    p_true = 1 - torch.arange(1, 11, dtype=torch.float64) * 0.05
    proba = torch.stack([p_true, 1 - p_true], 1)
    fitted = ConformalSets.fit(proba, torch.zeros(10), SetOptions(0.8, "lac"))
    assert fitted.threshold == pytest.approx(0.45) and fitted.n_calibration == 10 and not fitted.randomized
    # five new images of class 0 with p = 0.9, 0.6, 0.55, 0.5, 0.3: the first three hold class 0 (3/5 = 60 %)
    test = torch.tensor([0.9, 0.6, 0.55, 0.5, 0.3], dtype=torch.float64)
    inside = fitted.sets(torch.stack([test, 1 - test], 1), with_top=False)
    assert inside.tolist() == [[True, False], [True, False], [True, False], [False, False], [False, True]]
    assert set_scores(inside, torch.zeros(5)) == {"coverage": 0.6, "mean_size": 0.8, "singletons": 0.8}
    assert fitted.sets(torch.stack([test, 1 - test], 1))[3].tolist() == [True, False]  # shown: the top class added


def test_sets_hold_scores_below_the_threshold_and_always_the_top_class():
    fitted = ConformalSets("aps", 0.9, threshold=0.95, n_calibration=10)
    # row 1 scores 0.7, 1.0, 0.4 (the tie of 0.3s ranked by class index)
    assert fitted.sets(PROBA).tolist() == [[False, True, True], [True, False, True]]
    tiny = ConformalSets("aps", 0.9, threshold=0.45, n_calibration=10)  # the top class alone scores above it
    assert tiny.sets(PROBA, with_top=False).tolist() == [[False, False, False], [False, False, True]]
    assert tiny.sets(PROBA).tolist() == [[False, False, True], [False, False, True]]  # never empty when shown


def test_one_image_always_gets_one_randomized_set():
    proba, labels = _softmax_model(400, 0)
    fitted = ConformalSets.fit(proba, labels, SetOptions(0.9, "aps", randomized=True))
    torch.manual_seed(0)
    alone = torch.cat([fitted.sets(proba[i:i + 1]) for i in range(50)])
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)  # the global RNG is not drawn from
    for _ in range(3):  # in a batch, in another order, again: the same sets
        perm = torch.randperm(50)
        assert torch.equal(fitted.sets(proba[:50][perm]), alone[perm])
    assert torch.equal(image_uniforms(proba[:3]), image_uniforms(proba[:3].clone()))
    assert not torch.equal(image_uniforms(proba[:1]), image_uniforms(proba[1:2]))


def test_class_conditional_sets_fit_one_threshold_per_class():
    # class 0's images: p_true 0.95 .. 0.50 (LAC scores 0.05 .. 0.50), class 1's: p_true 0.99 .. 0.90
    p0 = 1 - torch.arange(1, 11, dtype=torch.float64) * 0.05
    p1 = 1 - torch.arange(1, 11, dtype=torch.float64) * 0.01
    proba = torch.cat([torch.stack([p0, 1 - p0], 1), torch.stack([1 - p1, p1], 1)])
    labels = torch.tensor([0] * 10 + [1] * 10)
    fitted = ConformalSets.fit(proba, labels, SetOptions(0.8, "lac", per_class=True))
    assert fitted.class_thresholds == pytest.approx([0.45, 0.09]) and fitted.class_counts == [10, 10]
    assert fitted.threshold is None and fitted.per_class and "class-conditional" in fitted.describe()
    marginal = ConformalSets.fit(proba, labels, SetOptions(0.8, "lac"))  # 17th smallest of the 20 scores
    assert marginal.threshold == pytest.approx(0.35)
    # an image with p = (0.4, 0.6): class 0 scores 0.6 > 0.45, class 1 scores 0.4 > 0.09; the top class is shown
    assert fitted.sets(torch.tensor([[0.4, 0.6]]), with_top=False).tolist() == [[False, False]]
    assert fitted.sets(torch.tensor([[0.4, 0.6]])).tolist() == [[False, True]]
    again = ConformalSets.from_dict(fitted.to_dict())
    assert again == fitted and json.loads(json.dumps(fitted.to_dict()))["class_thresholds"] == fitted.class_thresholds


def test_class_conditional_sets_refuse_a_class_with_too_few_images():
    proba, labels = _softmax_model(200, 0)
    labels = labels.clone()
    labels[labels == 3] = 0
    labels[:3] = 3  # class 3: 3 images, coverage 0.9 needs 9
    with pytest.raises(UserError, match=r"at least 9 labelled images of every class .*lymphocyte has 3\. Add images"):
        ConformalSets.fit(proba, labels, SetOptions(0.9, per_class=True), class_names=[f"c{i}" for i in range(3)]
                          + ["lymphocyte"] + [f"c{i}" for i in range(4, 8)])
    with pytest.raises(UserError, match="class 3 has 3"):
        check_class_counts(torch.bincount(labels, minlength=8).tolist(), 0.9)
    ConformalSets.fit(proba, labels, SetOptions(0.75, per_class=True))  # 3 images are enough for 75 %


def test_the_confident_model_pathology_of_aps_without_randomisation():
    """A confident model's non-randomized APS score is its whole top probability: the quantile lands near 1, and a
    less confident image needs most classes to reach it. Randomized APS does not."""
    top = 0.9 + 0.005 * torch.arange(1, 20, dtype=torch.float64)  # 19 calibration images, all right: 0.905 .. 0.995
    proba = torch.cat([top[:, None], ((1 - top) / 7)[:, None].expand(19, 7)], 1)
    labels = torch.zeros(19)
    plain = ConformalSets.fit(proba, labels, SetOptions(0.9, "aps", randomized=False))
    assert plain.threshold == pytest.approx(0.99)  # ceil(20 x 0.9) = 18th smallest top probability
    test = torch.tensor([[0.95] + [0.05 / 7] * 7], dtype=torch.float64)  # cumulative 0.95, 0.957, ..., 0.986, 0.993
    assert int(plain.sets(test).sum()) == 6  # 0.95 + 5 x 0.05/7 = 0.986 <= 0.99 < 0.993
    randomized = ConformalSets.fit(proba, labels, SetOptions(0.9, "aps", randomized=True))
    assert randomized.threshold < 0.95  # (1 - U) x top: the 18th smallest of 19 draws below 0.995
    assert int(randomized.sets(test).sum()) == 1  # the second class scores >= 0.95 > the threshold


def _softmax_model(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of a known 8-class model and labels drawn from them: the model is exactly calibrated."""
    g = torch.Generator().manual_seed(seed)
    proba = (2.0 * torch.randn(n, 8, generator=g, dtype=torch.float64)).softmax(1)
    return proba, torch.multinomial(proba, 1, generator=g).flatten()


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_sets_cover_fresh_images_at_the_promised_rate(method):
    n, coverage, tol = 5000, 0.9, 0.01
    covered = {False: [], True: []}
    for seed in range(4):
        cal, test = _softmax_model(n, seed), _softmax_model(n, 100 + seed)
        for randomized in (False, True):
            sets = ConformalSets.fit(*cal, SetOptions(coverage, method, randomized))
            covered[randomized].append(set_scores(sets.sets(test[0], with_top=False), test[1])["coverage"])
    for c in covered[False] + covered[True]:  # each seed: at least 1 - alpha, up to the two draws' noise
        assert c >= coverage - 3 * (2 * coverage * (1 - coverage) / n) ** 0.5
    mean = {k: sum(v) / len(v) for k, v in covered.items()}
    assert coverage - tol <= mean[True] <= coverage + 1 / (n + 1) + tol  # randomized (and LAC): tight
    assert mean[False] >= mean[True] - tol  # not randomized: conservative


@pytest.mark.parametrize("coverage, need", [(0.9, 9), (0.95, 19), (0.5, 1), (0.8, 4)])
def test_too_few_images_are_refused_with_the_number_needed(coverage, need):
    assert min_calibration_images(coverage) == need
    proba, labels = _softmax_model(need, 0)
    ConformalSets.fit(proba, labels, SetOptions(coverage))  # exactly enough works
    if need > 1:
        with pytest.raises(UserError, match=f"at least {need} images"):
            ConformalSets.fit(proba[:-1], labels[:-1], SetOptions(coverage))


@pytest.mark.parametrize("coverage", [0.0, 1.0, 1.5, -0.1])
def test_a_coverage_outside_zero_one_is_refused(coverage):
    with pytest.raises(UserError, match=r"outside \(0, 1\)"):
        min_calibration_images(coverage)


def test_training_fits_sets_and_predict_shows_them(reference_run, synthetic_root, tmp_path, capsys):
    """The run's own set figures are what predict's sets give on the same test images: coverage over the images the
    gate accepts, mean size, per class; a refused image has no set; TTA sets hold the class shown."""
    import numpy as np
    from PIL import Image

    from bloodcls.cli.predict import main as predict_main
    from bloodcls.data import load_npz
    from bloodcls.inference.checkpoint import load_trained

    run, results = reference_run
    sets = results["trust"]["sets"]
    ckpt = run / "checkpoints" / "best.ckpt"
    model = load_trained(ckpt)
    assert model.trust.conformal.n_calibration == model.trust.conformal_tta.n_calibration == 48  # the validation split
    assert sets["score"] == "LAC" and sets["target_coverage"] == 0.9 and not sets["class_conditional"]
    images, labels = load_npz(synthetic_root / "bloodmnist.npz")["test"]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"cell{i:03d}.png")
    Image.fromarray(np.full((40, 40, 3), 255, np.uint8)).save(tmp_path / "white.png")
    assert predict_main([str(ckpt), str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["path"].rsplit("/", 1)[1]: r for r in out["results"]}
    assert out["set_coverage"] == 0.9 and out["set_score"] == "LAC"
    assert rows["white.png"]["verdict"] == "not_a_cell" and "prediction_set" not in rows["white.png"]
    cells = [rows[f"cell{i:03d}.png"] for i in range(len(images))]
    accepted = [(r, model.class_names[y]) for r, y in zip(cells, labels.reshape(-1), strict=True) if r["in_distribution"]]
    assert all("prediction_set" not in r for r in cells if not r["in_distribution"])
    assert sets["images"] == len(accepted) and sets["gate_refused_share"] == pytest.approx(1 - len(accepted) / 80)
    assert sets["coverage"] == pytest.approx(sum(true in r["prediction_set"] for r, true in accepted) / len(accepted))
    assert sets["mean_size"] == pytest.approx(sum(len(r["prediction_set"]) for r, _ in accepted) / len(accepted))
    basophils = [r for r, true in accepted if true == "basophil"]
    assert sets["per_class"][0] == {"class": "basophil", "images": len(basophils), "coverage": pytest.approx(
        sum("basophil" in r["prediction_set"] for r in basophils) / len(basophils)), "mean_size": pytest.approx(
        sum(len(r["prediction_set"]) for r in basophils) / len(basophils))}
    assert predict_main([str(ckpt), str(tmp_path), "--json", "--tta"]) == 0
    tta = json.loads(capsys.readouterr().out)
    assert tta["tta"] and tta["set_coverage"] == 0.9
    for row in tta["results"]:
        assert row["class"] in row["prediction_set"] if row["in_distribution"] else "prediction_set" not in row
