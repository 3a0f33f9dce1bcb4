"""The shift suite: scores, determinism, the CLI on a trained synthetic checkpoint, and its errors."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from bloodcls import robustness
from bloodcls.cli.robustness import main as robustness_cli
from bloodcls.common.records import RobustnessRecord
from bloodcls.errors import UserError
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.robustness.shifts import SHIFTS
from bloodcls.training import train
from tests.conftest import FAST
from tests.helpers import REPO, compose_train


class MeanIntensityClassifier(nn.Module):
    """Predicts the class whose grey level is nearest the image's mean: blind to blur, not to brightness."""

    def __init__(self, levels):
        super().__init__()
        self.register_buffer("levels", torch.tensor(levels))

    def forward(self, x):
        return -(x.mean(dim=(1, 2, 3)).unsqueeze(1) - self.levels).abs()


def _grey_set(n_per_class=6, size=16):
    levels = [0.2, 0.4, 0.6, 0.8]
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(len(levels)).repeat_interleave(n_per_class)
    base = torch.tensor(levels)[labels].view(-1, 1, 1, 1)
    images = (base + 0.02 * torch.randn(len(labels), size, size, 3, generator=g)).clamp(0, 1)
    return images.mul(255).round().to(torch.uint8), labels, levels


def test_scores_follow_what_the_model_is_sensitive_to():
    images, labels, levels = _grey_set()
    model = MeanIntensityClassifier(levels)
    r = robustness.evaluate(model, images, labels, num_classes=4, device="cpu")
    assert r["clean_acc"] == 1.0 and r["clean_f1"] == 1.0
    bright = r["shifts"]["brightness_down"]["acc"]
    assert bright[0] == 1.0 and bright[-1] < 0.6  # 5 % dimmer is harmless, 45 % dimmer is not
    assert r["shifts"]["gaussian_blur"]["acc"] == [1.0] * 5  # blur keeps the mean
    assert r["shifts"]["contrast_down"]["acc"] == [1.0] * 5
    assert r["worst_acc"] == min(min(s["acc"]) for s in r["shifts"].values())
    assert r["worst"].split("@")[0] in SHIFTS


def test_result_structure_and_means():
    images, labels, levels = _grey_set()
    r = robustness.evaluate(MeanIntensityClassifier(levels), images, labels, num_classes=4, device="cpu",
                            shifts=["brightness_up", "noise", "jpeg"], severities=[1, 3, 5])
    assert set(r["shifts"]) == {"brightness_up", "noise", "jpeg"} and r["severities"] == [1, 3, 5]
    accs = [a for s in r["shifts"].values() for a in s["acc"]]
    assert len(accs) == 9 and r["mean_acc"] == pytest.approx(sum(accs) / 9)
    assert r["drop_acc"] == pytest.approx(r["clean_acc"] - r["mean_acc"])
    assert r["drop_f1"] == pytest.approx(r["clean_f1"] - r["mean_f1"])
    assert r["shifts"]["jpeg"]["levels"] == [90, 50, 10]
    assert r["per_severity"]["acc"][2] == pytest.approx(sum(s["acc"][2] for s in r["shifts"].values()) / 3)
    assert r["n_images"] == 24 and r["img_size"] == 16
    json.dumps(r)  # JSON-ready


def test_invariant_model_has_no_drop():
    images, labels, _ = _grey_set()

    class Constant(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 4).index_fill_(1, torch.tensor([0]), 1.0)

    r = robustness.evaluate(Constant(), images, labels, num_classes=4, device="cpu", shifts=["hue", "resample"])
    assert r["mean_acc"] == r["clean_acc"] == 0.25 and r["drop_acc"] == 0


def test_bad_shift_or_severity_is_a_user_error():
    images, labels, levels = _grey_set()
    model = MeanIntensityClassifier(levels)
    with pytest.raises(UserError, match="Unknown shift"):
        robustness.evaluate(model, images, labels, shifts=["fog"])
    with pytest.raises(UserError, match="Severities"):
        robustness.evaluate(model, images, labels, severities=[0, 6])


# -- on a checkpoint trained on synthetic data ---------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "0_baseline_28_s0"
    cfg = compose_train(["model=baseline", "data.img_size=28", f"data.root={synthetic_root}", "trainer.max_epochs=1",
                         "logger=csv", *FAST], output_dir=out)
    results = train(cfg, output_dir=out, group="test")
    return out, results


def test_suite_is_deterministic_and_independent_of_batch_size(trained_run, synthetic_root):
    run, _ = trained_run
    finished = FinishedRun.open(run)
    net = finished.load_model().net
    images, labels = finished.load_split("test", root=synthetic_root)
    training = net.training
    kw = {"shifts": ["noise", "motion_blur", "gamma"], "severities": [2, 5], "device": "cpu"}
    a = robustness.evaluate(net, images, labels, batch_size=512, **kw)
    b = robustness.evaluate(net, images, labels, batch_size=7, **kw)
    strip = {"time_s"}
    assert {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}
    assert net.training == training  # the caller's model is untouched
    c = robustness.evaluate(net, images, labels, seed=1, **kw)
    assert c["clean_acc"] == a["clean_acc"]


@pytest.mark.slow
def test_cli_writes_json_and_png(trained_run, synthetic_root, capsys):
    run, results = trained_run
    assert robustness_cli([str(run.parent), "--data-root", str(synthetic_root), "--no-download"]) == 0
    out = run / "robustness"
    on_disk = json.loads((out / "robustness.json").read_text())
    assert FinishedRun.open(run).robustness.clean_acc == on_disk["clean_acc"]
    assert set(on_disk["shifts"]) == set(SHIFTS) and all(len(s["acc"]) == 5 for s in on_disk["shifts"].values())
    for key in ("clean_acc", "clean_f1", "mean_acc", "mean_f1", "drop_acc", "worst_acc"):
        assert 0 <= on_disk[key] <= 1 or key.startswith("drop")
    # the suite's clean score is the training run's test score (up to one image of float noise)
    assert on_disk["clean_acc"] == pytest.approx(results["test"]["acc"], abs=1 / 80 + 1e-6)
    assert on_disk["model"] == "baseline" and on_disk["checkpoint"].endswith("best.ckpt")
    assert on_disk["environment"]["device"].startswith("CPU")
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean under shift" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_out_folder_and_table(trained_run, synthetic_root, tmp_path, capsys):
    run, _ = trained_run
    ckpt = run / "checkpoints" / "best.ckpt"
    robustness_cli([str(ckpt), str(run), "--data-root", str(synthetic_root), "--no-download", "--out",
                     str(tmp_path), "--shifts", "jpeg,noise", "--severities", "1", "5", "--table", "--examples"])
    for name in ("robustness.json", "robustness.png", "shift_examples.png"):
        assert (tmp_path / run.name / name).is_file()
    table = capsys.readouterr().out
    assert "| recipe |" in table and "| 2 |" in table  # both targets, one recipe
    assert json.loads((tmp_path / run.name / "robustness.json").read_text())["recipe"] == "study"
    assert "| baseline_28 `recipe=study` | 2 |" in table


def test_cli_user_errors(tmp_path, trained_run, capsys):
    (tmp_path / "empty").mkdir()
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_text("not a checkpoint")
    for args, message in [([str(tmp_path / "nope")], "does not exist"),
                          ([str(tmp_path / "empty")], "holds no checkpoints"),
                          ([str(bogus)], "not a readable PyTorch checkpoint")]:
        with pytest.raises(SystemExit) as exit_info:
            robustness_cli(args)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_cli_missing_data_is_one_clear_message(trained_run, tmp_path):
    run, _ = trained_run
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "bloodcls", "robustness", str(run), "--data-root", str(tmp_path),
                           "--no-download"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "bloodmnist.npz not found" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_summary_table_keeps_recipes_of_one_experiment_apart():
    from bloodcls.robustness import summary_table

    def payload(recipe, seed, clean):
        return {"experiment": "baseline_64", "recipe": recipe, "train_seed": seed, "run": f"r{seed}",
                "clean_acc": clean, "mean_acc": clean - 0.3, "drop_acc": 0.3, "clean_f1": clean, "mean_f1": clean - 0.3,
                "shifts": {"jpeg": {"mean_acc": clean - 0.1}}, "severities": [1], "per_severity": {"acc": [clean - 0.2]}}

    table = summary_table([RobustnessRecord.from_dict(payload(*p)) for p in [("study", 0, 0.9), ("strong", 0, 0.95),
                                                                            ("study", 1, 0.92)]])
    assert "| baseline_64 `recipe=study` | 2 | 0,1 | 91.00 ± 1.41 |" in table
    assert "| baseline_64 `recipe=strong` | 1 | 0 | 95.00" in table
