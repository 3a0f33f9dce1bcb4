"""Trust in a prediction: temperature scaling, abstention, the out-of-distribution gate, and where they are stored."""

import json
import shutil

import numpy as np
import pytest
import torch

from bloodcls.analysis.trust_report import trust_targets
from bloodcls.cli.predict import main as predict_main
from bloodcls.cli.trust import main as trust_main
from bloodcls.data import load_npz
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.classify import judge_images
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.uncertainty.calibration import calibration_scores, fit_temperature
from bloodcls.uncertainty.far_ood import far_ood_sets
from bloodcls.uncertainty.selective import abstain_threshold, curve_points, selective_scores
from bloodcls.uncertainty.state import CHECKPOINT_KEY
from tests.conftest import REPO


def _overconfident(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a 70 %-accurate 8-class model that is ~100 % sure of every answer."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 8, (n,), generator=g)
    wrong = torch.rand(n, generator=g) < 0.3
    pred = torch.where(wrong, (labels + torch.randint(1, 8, (n,), generator=g)) % 8, labels)
    logits = torch.randn(n, 8, generator=g)
    logits[torch.arange(n), pred] += 4.0
    return 6.0 * logits, labels


def test_temperature_scaling_lowers_ece_and_keeps_the_argmax():
    val_logits, val_labels = _overconfident(2000, seed=0)
    test_logits, test_labels = _overconfident(2000, seed=1)
    t = fit_temperature(val_logits, val_labels)
    assert t > 2  # an over-confident model is cooled down
    before = calibration_scores(test_logits.softmax(1), test_labels)
    after = calibration_scores((test_logits / t).softmax(1), test_labels)
    assert before["ece"] > 0.2 and after["ece"] < before["ece"] / 2
    assert after["nll"] < before["nll"] and after["brier"] < before["brier"]
    assert torch.equal((test_logits / t).argmax(1), test_logits.argmax(1))


def test_calibration_scores_on_hand_made_cases():
    labels = torch.tensor([0, 1, 2, 3])
    perfect = calibration_scores(torch.eye(8)[labels], labels)
    assert perfect["ece"] == pytest.approx(0) and perfect["brier"] == pytest.approx(0) and perfect["nll"] < 1e-6
    half = torch.full((4, 8), 0.5 / 7)
    half[torch.arange(4), labels] = 0.5  # 50 % sure, always right: ECE 0.5
    assert calibration_scores(half, labels)["ece"] == pytest.approx(0.5)


def test_selective_scores_on_a_hand_made_case():
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6])
    correct = torch.tensor([True, True, False, True])  # risks 0, 0, 1/3, 1/4 at coverages 1/4 .. 1
    s = selective_scores(conf, correct)
    assert s["aurc"] == pytest.approx((1 / 3 + 1 / 4) / 4)
    assert s["augrc"] == pytest.approx((1 / 3 * 3 / 4 + 1 / 4) / 4)
    assert s["acc_at_90"] == pytest.approx(0.75) and s["acc_at_95"] == pytest.approx(0.75)
    curve = curve_points(conf, correct, points=4)
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0] and curve["risk"] == pytest.approx([0, 0, 1 / 3, 1 / 4])


def test_abstention_threshold_meets_its_validation_target():
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(5000, generator=g)
    correct = torch.rand(5000, generator=g) < conf ** 0.3  # confident answers are more often right
    t = abstain_threshold(conf, correct, max_error=0.01)
    kept = conf >= t
    assert kept.any() and (~correct[kept]).double().mean() <= 0.01
    lower = conf[conf < t].max()  # the threshold is the lowest that meets the target
    assert (~correct[conf >= lower]).double().mean() > 0.01


def test_gate_flags_non_cells_and_accepts_the_test_images(trained_checkpoint, synthetic_root):
    model = load_trained(trained_checkpoint)
    assert model.trust is not None and model.trust.feature_layer.startswith("classifier")
    test = load_npz(synthetic_root / "bloodmnist.npz")["test"][0]
    assert judge_images(model, test).accepted.double().mean() >= 0.8
    sets = far_ood_sets(28, n=40, seed=0)
    uniform_noise = sets["noise"][:20]  # the uniform-noise half (the Gaussian half resembles this toy data)
    for name, images in [("natural", sets["natural"]), ("natural_crops", sets["natural_crops"]),
                         ("uniform", sets["uniform"]), ("noise", uniform_noise)]:
        assert (~judge_images(model, images).accepted).double().mean() >= 0.9, name


def test_trust_state_round_trips_weights_only_and_through_safetensors(trained_checkpoint, tmp_path):
    from bloodcls.cli.export import main as export_main

    raw = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)  # plain values only
    assert isinstance(raw[CHECKPOINT_KEY]["ood_precision"], torch.Tensor)
    model = load_trained(trained_checkpoint)
    out = tmp_path / "model.safetensors"
    assert export_main([str(trained_checkpoint), "--format", "safetensors", "--output", str(out)]) == 0
    again = load_trained(out).trust
    assert again.temperature == model.trust.temperature and again.ood_threshold == model.trust.ood_threshold
    assert torch.equal(again.ood_means, model.trust.ood_means) and torch.equal(again.ood_precision, model.trust.ood_precision)


def test_predict_json_carries_the_trust_fields(trained_checkpoint, synthetic_root, tmp_path, capsys):
    from PIL import Image

    test = load_npz(synthetic_root / "bloodmnist.npz")["test"][0]
    Image.fromarray(test[0]).save(tmp_path / "cell.png")
    Image.fromarray(np.full((40, 40, 3), 255, np.uint8)).save(tmp_path / "white.png")
    assert predict_main([str(trained_checkpoint), str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["path"].rsplit("/", 1)[1]: r for r in out["results"]}
    for r in rows.values():
        assert isinstance(r["in_distribution"], bool) and isinstance(r["abstain"], bool)
        assert 0 <= r["confidence"] <= 1 and r["ood_score"] >= 0
    assert rows["white.png"]["in_distribution"] is False and rows["white.png"]["verdict"] == "not_a_cell"
    assert rows["white.png"]["class"] in out["results"][0]["probabilities"]  # the class stays in the JSON
    assert out["calibrated"] is True and out["trust"]["available"] is True
    assert predict_main([str(trained_checkpoint), str(tmp_path / "white.png")]) == 0
    assert "does not look like a BloodMNIST cell image" in capsys.readouterr().out


def test_an_old_checkpoint_without_trust_still_predicts(trained_checkpoint, synthetic_root, tmp_path, capsys):
    from PIL import Image

    ckpt = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    del ckpt[CHECKPOINT_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    Image.fromarray(load_npz(synthetic_root / "bloodmnist.npz")["test"][0][0]).save(tmp_path / "cell.png")
    assert load_trained(old).trust is None
    assert predict_main([str(old), str(tmp_path / "cell.png"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["in_distribution"] is None and row["confidence"] is None and row["verdict"] == "unchecked"
    assert predict_main([str(old), str(tmp_path / "cell.png")]) == 0
    captured = capsys.readouterr()
    assert "unavailable for this checkpoint" in captured.err and "cell.png: " in captured.out


def test_training_reports_trust_in_results(reference_run):
    run, results = reference_run
    trust = results["trust"]
    assert set(trust["calibration"]) == {"before", "after"} and "aurc" in trust["selective"]
    assert {"natural", "natural_crops", "uniform", "noise", "all"} <= set(trust["gate"]["far_ood"])
    assert results["summary"]["trust/ece_after"] == trust["calibration"]["after"]["ece"]
    from PIL import Image

    with Image.open(run / "trust" / "reliability.png") as figure:  # the risk-coverage curve beside the diagram
        assert figure.size[0] == 12 * 110
    curve = trust["selective"]["curve"]  # stored, not only its area
    assert len(curve["coverage"]) == len(curve["risk"]) <= 100 and curve["coverage"][-1] == 1.0
    assert curve["risk"][-1] == pytest.approx(1 - trust["test_acc"])
    far = trust["gate"]["far_ood"]["all"]
    assert far["turned_away"] == round(far["fires"] * far["n_ood"])
    assert results["summary"]["trust/test_acc"] == trust["test_acc"]
    eff = results["efficiency"]  # the trust fit is timed apart from the test it follows
    assert eff["trust_time_s"] > 0 and eff["test_time_s"] > 0


@pytest.mark.slow
def test_trust_command_fits_old_runs_and_never_rewrites_a_handed_in_checkpoint(reference_run, synthetic_root,
                                                                              tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference_run[0], run)
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    del ckpt[CHECKPOINT_KEY]
    torch.save(ckpt, run / "checkpoints" / "best.ckpt")  # as written before trust existed
    loose = tmp_path / "loose.ckpt"
    torch.save(ckpt, loose)
    before = loose.read_bytes()
    assert trust_main([str(run), str(loose), "--shift-images", "20", "--data-root", str(synthetic_root), "--table"]) == 0
    assert FinishedRun.open(run).trust.fitted_now and FinishedRun.open(tmp_path).trust.fitted_now  # loose: its folder
    assert load_trained(run / "checkpoints" / "best.ckpt").trust is not None  # the run's own checkpoint
    assert loose.read_bytes() == before  # a checkpoint from elsewhere is never rewritten
    rec = json.loads((run / "trust" / "trust.json").read_text())
    assert len(rec["shift_firing"]["rates"]["noise"]) == 5 and rec["shift_firing"]["n_images"] == 20
    assert "trust" in json.loads((run / "results.json").read_text())
    table = capsys.readouterr().out
    assert "ECE after (%)" in table and "far-OOD AUROC (%)" in table and "mean over shifts" in table
    (again,) = trust_targets([run], reuse=True)  # the scored record, not scored again
    assert again.report == rec["report"] and again.raw == rec
    assert trust_main([str(run), "--reuse", "--table"]) == 0 and "ECE after (%)" in capsys.readouterr().out


def test_trust_command_rejects_a_bad_value(trained_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        trust_main([str(trained_checkpoint), "--shift-images", "0"])
    assert exit_info.value.code == 2 and "--shift-images 0" in capsys.readouterr().err


def test_predicting_imports_neither_scikit_learn_nor_scipy(trained_checkpoint, synthetic_root, tmp_path):
    """The gate is fitted with scikit-learn; its score per image is plain torch."""
    import subprocess
    import sys

    from PIL import Image

    Image.fromarray(load_npz(synthetic_root / "bloodmnist.npz")["test"][0][0]).save(tmp_path / "cell.png")
    code = (f"import sys, contextlib, io; from bloodcls.cli.predict import main\nwith contextlib.redirect_stdout(io.StringIO()):"
            f" main([{str(trained_checkpoint)!r}, {str(tmp_path / 'cell.png')!r}, '--json'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy', 'pytorch_ood'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_tta_predictions_are_judged_by_a_threshold_fitted_on_tta_confidence(trained_checkpoint, synthetic_root):
    model = load_trained(trained_checkpoint)
    trust = model.trust
    assert trust.abstain_below_tta is not None and 0 < trust.abstain_below_tta <= 1
    images, labels = load_npz(synthetic_root / "bloodmnist.npz")["val"]
    judged = judge_images(model, images, tta=True)
    assert judged.tta and torch.equal(judged.review, judged.confidence < trust.abstain_below_tta)
    kept = ~judged.review.numpy()  # the validation split it was fitted on meets the 1 % target under TTA too
    assert (judged.predicted.numpy()[kept] != labels.reshape(-1)[kept]).mean() <= trust.max_error


def test_tta_with_a_state_fitted_before_tta_thresholds_is_refused(trained_checkpoint, synthetic_root, tmp_path,
                                                                 capsys):
    from PIL import Image

    ckpt = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    del ckpt[CHECKPOINT_KEY]["abstain_below_tta"]  # as written before it existed
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    Image.fromarray(load_npz(synthetic_root / "bloodmnist.npz")["test"][0][0]).save(tmp_path / "cell.png")
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(old), str(tmp_path / "cell.png"), "--tta"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--tta" in err and "--refit" in err and "Traceback" not in err
    assert predict_main([str(old), str(tmp_path / "cell.png"), "--json"]) == 0  # single view: as before
    assert json.loads(capsys.readouterr().out)["results"][0]["abstain"] is not None


def test_the_training_time_set_score_is_the_default_or_the_configured_one():
    """callbacks.trust.method: null keeps the score chosen on evidence (LAC); aps gives randomised APS."""
    from hydra.utils import instantiate

    from tests.helpers import compose_train

    default = instantiate(compose_train([]).callbacks.trust)
    assert default.sets.method == "lac" and default.sets.coverage == 0.9 and not default.sets.per_class
    aps = instantiate(compose_train(["callbacks.trust.method=aps", "callbacks.trust.per_class=true"]).callbacks.trust)
    assert aps.sets.method == "aps" and aps.sets.randomized and aps.sets.per_class
    with pytest.raises(Exception, match="Unknown prediction-set score 'thr'"):
        instantiate(compose_train(["callbacks.trust.method=thr"]).callbacks.trust)
