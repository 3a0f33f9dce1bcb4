"""`bloodcls calibrate`: a model's trust state refitted on a lab's labelled images into a new checkpoint that loads
weights-only, gives prediction sets, and keeps the weights; too few images and bad outputs refused."""

import json

import numpy as np
import pytest
import torch

from bloodcls.cli.calibrate import main
from bloodcls.data.files import CLASS_NAMES
from bloodcls.data.labelled import fingerprints, load_labelled
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.recalibration import (
    IN_SAMPLE,
    MIN_IMAGES,
    check_enough,
    gate_opened_warning,
    split_holdout,
)
from tests.synthetic import write_synthetic_folder

LAB = ("basophil", "eosinophil", "erythroblast", "immature_granulocytes")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("data") / "lab", n_per_class=8, size=28, classes=LAB)


def test_calibrate_writes_a_checkpoint_with_the_lab_s_state(trained_checkpoint, lab, tmp_path, capsys):
    out = tmp_path / "lab.ckpt"
    assert main([str(trained_checkpoint), str(lab), "--out", str(out), "--coverage", "0.8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    old, new = load_trained(trained_checkpoint), load_trained(out)  # weights-only, as predict loads it
    assert report["images"] == report["fitted_on"] == report["scored_on"] == 32 and report["holdout"] is None
    assert report["in_sample"] is True and report["note"] == IN_SAMPLE  # said in the JSON too
    assert report["warnings"] == [w for w in [gate_opened_warning(report)] if w]
    assert report["before"]["temperature"] == old.trust.temperature
    assert report["after"]["sets"]["target_coverage"] == 0.8 and report["after"]["sets_tta"]["target_coverage"] == 0.8
    assert new.trust.conformal.coverage == 0.8 and new.trust.conformal.n_calibration == 32
    assert new.trust.conformal_tta.n_calibration == 32  # the default score, chosen on evidence: LAC, never randomised
    assert new.trust.conformal.method == "lac" and not new.trust.conformal.randomized
    assert new.trust.calibrated_on["images"] == 32 and new.trust.calibrated_on["data"] == str(lab)
    assert len(new.trust.calibrated_on["fingerprints"]) == 32
    assert new.trust.temperature == pytest.approx(report["after"]["temperature"])
    assert torch.equal(new.trust.ood_means, old.trust.ood_means)  # the gate's statistics stay the training ones
    for a, b in zip(old.net.state_dict().values(), new.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # weights untouched
    assert main([str(trained_checkpoint), str(lab), "--out", str(tmp_path / "again.ckpt")]) == 0
    text = capsys.readouterr().out
    assert "scored (in-sample: scored on the images it was fitted on" in text and "--holdout 0.5" in text


def test_a_holdout_fits_on_one_part_and_scores_on_the_other(trained_checkpoint, tmp_path, capsys):
    """Every "after" figure is on the held-out images: evaluate, run on those images alone with the new
    checkpoint, reports the same; it warns when it scores the images calibrated on."""
    import shutil

    from bloodcls.cli.evaluate import main as evaluate_main

    lab = write_synthetic_folder(tmp_path / "lab", n_per_class=12, size=28, classes=LAB)
    out = tmp_path / "lab.ckpt"
    assert main([str(trained_checkpoint), str(lab), "--out", str(out), "--holdout", "0.5", "--seed", "3",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["fitted_on"], report["scored_on"], report["in_sample"], report["note"]) == (24, 24, False, None)
    new = load_trained(out)
    fitted = set(new.trust.calibrated_on["fingerprints"])
    assert len(fitted) == 24 and new.trust.conformal.n_calibration == 24 and new.trust.calibrated_on["seed"] == 3
    data = load_labelled(lab, new.class_names, new.img_size)
    held = [i for i, f in enumerate(fingerprints(data.images)) if f not in fitted]
    assert len(held) == 24 and sorted(data.targets[held].tolist()) == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6
    apart = tmp_path / "held"
    for i in held:
        (apart / data.labels[i]).mkdir(parents=True, exist_ok=True)
        shutil.copy(lab / data.paths[i], apart / data.paths[i])
    assert evaluate_main([str(out), str(apart), "--json", "--out", str(tmp_path / "ev")]) == 0
    captured = capsys.readouterr()
    scored = json.loads(captured.out)
    assert "warning" not in captured.err and scored["calibrated_on_overlap"] is None
    after = report["after"]
    assert scored["sets"] == after["sets"] and scored["gate"] == {k: v for k, v in after["gate"].items()
                                                                  if k != "far_ood_turned_away"}
    assert scored["review"] == after["review"] and scored["calibration"]["after"] == after["calibration"]
    assert evaluate_main([str(out), str(lab), "--out", str(tmp_path / "ev2")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: 24 of the 48 images scored here are among the 24 this "
                                                   "checkpoint was calibrated on")


def test_class_conditional_calibration(trained_checkpoint, tmp_path, capsys):
    every = write_synthetic_folder(tmp_path / "every", n_per_class=8, size=28, classes=tuple(CLASS_NAMES))
    out = tmp_path / "pc.ckpt"
    assert main([str(trained_checkpoint), str(every), "--out", str(out), "--per-class", "--coverage", "0.75",
                 "--holdout", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    sets = load_trained(out).trust.conformal
    assert sets.per_class and sets.class_counts == [4] * 8 and len(sets.class_thresholds) == 8
    assert report["after"]["sets"]["class_conditional"] and len(report["after"]["sets"]["per_class"]) == 8
    with pytest.raises(SystemExit) as exit_:  # 4 fitted images per class are too few for 85 %: 6 needed, by class
        main([str(trained_checkpoint), str(every), "--out", str(out), "--per-class", "--coverage", "0.85",
              "--holdout", "0.5"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "need at least 6 labelled images of every class" in err
    assert "basophil has 4" in err and "platelet has 4" in err and "Traceback" not in err


def test_a_lab_without_some_classes_cannot_have_class_conditional_sets(trained_checkpoint, lab, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(trained_checkpoint), str(lab), "--out", str(tmp_path / "x.ckpt"), "--per-class"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "lymphocyte has 0; monocyte has 0; neutrophil has 0; platelet has 0" in err


def test_too_few_images_are_refused_with_the_number_needed():
    check_enough(MIN_IMAGES, 0.9, "lab")
    with pytest.raises(UserError, match=r"holds 12 labelled images of the model's classes to fit on.*at least 20"):
        check_enough(12, 0.9, "lab")
    with pytest.raises(UserError, match=r"at least 99 \(99 for prediction sets at 99% coverage"):
        check_enough(50, 0.99, "lab")


def _gate(before: float, after: float) -> dict:
    return {"before": {"gate": {"far_ood_turned_away": before}}, "after": {"gate": {"far_ood_turned_away": after}}}


def test_a_gate_opened_to_non_cells_is_warned_about_with_the_remedy():
    # the second lab's seed 0, calibrated without adaptation: 100 % of non-cells turned away before, 86.4 % after
    warning = gate_opened_warning(_gate(1.0, 0.864))
    assert "turns away only 86.4 % of non-cell images" in warning and "100.0 % before" in warning
    assert "bloodcls adapt" in warning
    assert gate_opened_warning(_gate(1.0, 0.985)) is None  # adapted first: the gate holds
    assert gate_opened_warning(_gate(0.80, 0.85)) is None  # it was never stricter: calibrating did not open it


def test_the_holdout_split_is_stratified_and_seeded():
    targets = np.array([0] * 10 + [1] * 6 + [2] * 4)
    fit, held = split_holdout(targets, 0.5, seed=0)
    assert np.bincount(targets[held]).tolist() == [5, 3, 2] and sorted([*fit, *held]) == list(range(20))
    assert np.array_equal(split_holdout(targets, 0.5, seed=0)[1], held)
    assert not np.array_equal(split_holdout(targets, 0.5, seed=1)[1], held)
    assert split_holdout(targets, None)[1].size == 0


@pytest.mark.parametrize("extra, words", [(["--coverage", "1.5"], "between 0 and 1"),
                                          (["--holdout", "1"], "--holdout 1.0: give the share"),
                                          (["--out", "x.safetensors"], "give a .ckpt path"),
                                          (["--out", "x.pt"], "or a folder (a name without a suffix)")])
def test_bad_arguments_are_one_paragraph_exit_2(trained_checkpoint, lab, tmp_path, capsys, extra, words):
    args = [str(trained_checkpoint), str(lab), "--out", str(tmp_path / "x.ckpt"), *extra]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and words in capsys.readouterr().err


def test_the_input_checkpoint_is_never_overwritten(trained_checkpoint, lab, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(trained_checkpoint), str(lab), "--out", str(trained_checkpoint)])
    assert exit_.value.code == 2 and "write to a new file or folder" in capsys.readouterr().err


def test_an_out_folder_that_cannot_take_the_bundle_is_refused_before_any_work(trained_checkpoint, lab, tmp_path,
                                                                             capsys, monkeypatch):
    """--out is checked before the model and the images are read: a folder of other files is never written over."""
    import bloodcls.data.labelled as labelled

    monkeypatch.setattr(labelled, "load_labelled", lambda *a, **k: pytest.fail("the images were read"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        main([str(trained_checkpoint), str(lab), "--out", str(busy)])
    assert exit_.value.code == 2 and "not a model bundle, so it is never written over" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
