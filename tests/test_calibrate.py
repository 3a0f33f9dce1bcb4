"""`bloodcls calibrate`: a model's trust state refitted on a lab's labelled images into a new checkpoint that loads
weights-only, gives prediction sets, and keeps the weights; too few images and bad outputs refused."""

import json

import pytest
import torch

from bloodcls.cli.calibrate import main
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.recalibration import MIN_IMAGES, check_enough
from tests.synthetic import write_synthetic_folder

LAB = ("basophil", "eosinophil", "erythroblast", "immature_granulocytes")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("data") / "lab", n_per_class=8, size=28, classes=LAB)


def test_calibrate_writes_a_checkpoint_with_the_lab_s_state(trained_checkpoint, lab, tmp_path, capsys):
    out = tmp_path / "lab.ckpt"
    assert main([str(trained_checkpoint), str(lab), "--out", str(out), "--coverage", "0.8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 32 and report["before"]["temperature"] == load_trained(trained_checkpoint).trust.temperature
    after = report["after"]
    assert 0 <= after["far_ood_turned_away"] <= 1 and 0 <= report["before"]["far_ood_turned_away"] <= 1
    assert after["sets"]["target_coverage"] == 0.8 and after["sets"]["coverage"] >= 0.8  # on its own images
    old, new = load_trained(trained_checkpoint), load_trained(out)  # weights-only, as predict loads it
    assert new.trust.conformal.coverage == 0.8 and new.trust.conformal.n_calibration == 32
    assert new.trust.calibrated_on["images"] == 32 and new.trust.calibrated_on["data"] == str(lab)
    assert new.trust.temperature == pytest.approx(after["temperature"])
    assert torch.equal(new.trust.ood_means, old.trust.ood_means)  # the gate's statistics stay the training ones
    for a, b in zip(old.net.state_dict().values(), new.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # weights untouched


def test_too_few_images_are_refused_with_the_number_needed():
    check_enough(MIN_IMAGES, 0.9, "lab")
    with pytest.raises(UserError, match=r"holds 12 labelled images.*at least 20"):
        check_enough(12, 0.9, "lab")
    with pytest.raises(UserError, match=r"at least 99 \(99 for prediction sets at 99% coverage"):
        check_enough(50, 0.99, "lab")


@pytest.mark.parametrize("extra, words", [(["--coverage", "1.5"], "between 0 and 1"),
                                          (["--out", "x.safetensors"], "give a .ckpt path")])
def test_bad_arguments_are_one_paragraph_exit_2(trained_checkpoint, lab, tmp_path, capsys, extra, words):
    args = [str(trained_checkpoint), str(lab), "--out", str(tmp_path / "x.ckpt"), *extra]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and words in capsys.readouterr().err


def test_the_input_checkpoint_is_never_overwritten(trained_checkpoint, lab, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(trained_checkpoint), str(lab), "--out", str(trained_checkpoint)])
    assert exit_.value.code == 2 and "write to a new file" in capsys.readouterr().err
