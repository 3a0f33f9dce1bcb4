"""Recipes (conf/recipe/), the layer options they set, TTA scores, EMA weights and the ablation table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from torch import nn

from bloodcls.analysis.report import build_report
from bloodcls.analysis.report_markdown import markdown
from bloodcls.cli.ablation import main as ablation_main
from bloodcls.common.checkpoints import read_checkpoint
from bloodcls.common.tta import eight_views, tta_proba
from bloodcls.data import DataError
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.classify import predict_proba
from bloodcls.inference.exporters import export
from bloodcls.models import build_model
from bloodcls.training import train
from tests.conftest import FAST
from tests.helpers import compose_train

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "experiment").glob("*.yaml"))
RECIPES = ["study", "keras", "strong"]


def _bns(net: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_every_recipe(experiment, recipe, tmp_path):
    cfg = compose_train([f"experiment={experiment}", f"recipe={recipe}"], output_dir=tmp_path)
    assert cfg.recipe_name == recipe and cfg.experiment_name == experiment
    module = hydra.utils.instantiate(cfg.model)
    assert module.hparams["init"] == cfg.model.init and module.hparams["bn_eps"] == cfg.model.bn_eps
    if cfg.model.name == "timm":  # standard backbones keep timm's BatchNorm (tests/test_timm.py)
        assert all(m.momentum == 0.1 and m.eps == 1e-5 for m in _bns(module.net))
    else:
        assert all(m.momentum == 0.01 and m.eps == 1e-3 for m in _bns(module.net))  # Keras's BatchNorm in every recipe
    if recipe == "strong":
        assert cfg.model.optimizer._target_ == "torch.optim.AdamW" and cfg.callbacks.early_stopping is None
        # photometric augmentation trains twice as long under the fixed schedule
        epochs = 40 if experiment.endswith("_robust") else 20
        assert cfg.model.scheduler.T_max == cfg.trainer.max_epochs == epochs and cfg.model.tta
        # augmentation on for every model; the robust experiments keep their photometric steps
        assert cfg.data.min_augment == "geometric"
    else:
        assert cfg.model.optimizer._target_ == "torch.optim.Adam" and cfg.model.optimizer.lr in (1e-4, 1e-3)
        assert cfg.callbacks.early_stopping.patience == 5 and cfg.trainer.max_epochs == 40 and not cfg.model.tta
    # validation on precise BatchNorm statistics (a 2,048-image stratified sample) in `study` only: `keras` stays the
    # strict port
    precise = cfg.callbacks.get("precise_bn") or {}
    assert precise.get("when") == ("validation" if recipe == "study" else None)
    if recipe == "study":
        assert precise.max_images == 2048 and precise.seed == cfg.seed


def test_the_command_line_sets_the_strong_schedule_for_any_experiment(tmp_path):
    for override in ("trainer.max_epochs=7", "strong_epochs=7"):
        cfg = compose_train(["experiment=baseline_64_robust", "recipe=strong", override], output_dir=tmp_path)
        assert cfg.trainer.max_epochs == cfg.model.scheduler.T_max == 7


def test_study_is_the_default_recipe(tmp_path):
    cfg = compose_train(["experiment=baseline_64"], output_dir=tmp_path)
    assert cfg.recipe_name == "study" and cfg.model.init == "torch" and cfg.model.label_smoothing == 0.0


def _lrs_after(val_losses: list[float], overrides: list[str], tmp_path) -> list[float]:
    """The learning rate after each epoch when the configured scheduler is stepped with these val losses."""
    cfg = compose_train(["experiment=baseline_64", *overrides], output_dir=tmp_path)
    optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = hydra.utils.instantiate(cfg.model.scheduler)(optimizer)
    lrs = []
    for loss in val_losses:
        scheduler.step(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_plateau_schedule_counts_patience_as_keras_does(tmp_path):
    # The study's ReduceLROnPlateau(patience=3): Keras halves the rate at the 3rd epoch in a row without
    # improvement (here epoch 3); an improvement smaller than Keras's absolute min_delta 1e-4 does not count.
    losses = [0.5, 0.6, 0.6, 0.49993, 0.6, 0.6]
    assert _lrs_after(losses, [], tmp_path) == [1e-4, 1e-4, 1e-4, 5e-5, 5e-5, 5e-5]
    # PyTorch's own reading of patience 3 (the ablation) waits one more epoch and takes 0.49993 as better
    assert _lrs_after(losses, ["+ablation=torch_plateau"], tmp_path) == [1e-4] * 6
    assert _lrs_after([0.5, 0.6, 0.6, 0.6, 0.6], ["+ablation=torch_plateau"], tmp_path)[-1] == 5e-5


@pytest.mark.parametrize("off", ["scheduler=none", "~scheduler", "model.scheduler=null"])
def test_switching_the_scheduler_off_trains_without_one(off, synthetic_root, tmp_path):
    quick = ["model=baseline", "data.img_size=28", f"data.root={synthetic_root}", "logger=none", *FAST]
    cfg = compose_train([off, *quick, "trainer.max_epochs=2", "callbacks.trust=null"], output_dir=tmp_path)
    assert cfg.model.get("scheduler") is None
    assert isinstance(hydra.utils.instantiate(cfg.model).configure_optimizers(), torch.optim.Optimizer)
    if off == "scheduler=none":  # a plateau that halves the rate after every epoch would show here
        assert [r["lr"] for r in train(cfg, output_dir=tmp_path)["history"]] == [3e-3, 3e-3]
    assert isinstance(hydra.utils.instantiate(compose_train(quick).model).configure_optimizers(), dict)


def test_a_module_built_without_an_optimizer_says_where_it_comes_from():
    from bloodcls.training.module import BloodCellClassifier

    with pytest.raises(UserError, match="conf/optimizer"):
        BloodCellClassifier(name="baseline", img_size=28).configure_optimizers()


def _glorot_bound(conv: nn.Conv2d) -> float:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return (6 / (conv.in_channels * k + conv.out_channels * k)) ** 0.5


def test_keras_recipe_gives_glorot_and_study_gives_pytorch_init(tmp_path):
    nets = {r: hydra.utils.instantiate(compose_train(["experiment=skip", f"recipe={r}"], output_dir=tmp_path).model).net
            for r in ("keras", "study")}
    # the second 3x3 conv (32 -> 32): there Glorot's bound is clearly wider than PyTorch's
    conv_k, conv_s = ([m for m in nets[r].modules() if isinstance(m, nn.Conv2d)][1] for r in ("keras", "study"))
    assert torch.count_nonzero(conv_k.bias) == 0 and conv_k.weight.abs().max() > 0.9 * _glorot_bound(conv_k)
    # PyTorch's default: kaiming-uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in), and fan-in-scaled uniform biases
    fan_in = conv_s.in_channels * 9
    assert conv_s.weight.abs().max() <= fan_in ** -0.5 < 0.9 * _glorot_bound(conv_s)
    assert torch.count_nonzero(conv_s.bias) == conv_s.out_channels
    dense = [m for m in nets["study"].modules() if isinstance(m, nn.Linear)][0]
    assert dense.weight.abs().max() <= dense.in_features ** -0.5


def test_layer_options_and_their_errors():
    net = build_model("inception", 64, bn_momentum=0.1, bn_eps=1e-5, init="torch")
    assert {(m.momentum, m.eps) for m in _bns(net)} == {(0.1, 1e-5)}
    with pytest.raises(UserError, match=r"model.init='he' \(expected keras or torch\)"):
        build_model("inception", 64, init="he")
    with pytest.raises(DataError, match=r"data.min_augment='all' \(expected none or geometric\)"):
        from bloodcls.data import BloodMNISTDataModule

        BloodMNISTDataModule(img_size=28, min_augment="all")


def test_tta_equals_plain_prediction_on_rotation_invariant_input():
    torch.manual_seed(0)
    net = build_model("skip", 28).eval()
    x = torch.stack(eight_views(torch.rand(4, 3, 28, 28))).mean(dim=0)  # averaged over the group: invariant
    with torch.no_grad():
        plain, tta = net(x).softmax(dim=1), tta_proba(net, x)
        assert torch.allclose(tta, plain, atol=1e-5)
        y = torch.rand(4, 3, 28, 28)  # an ordinary image: the average really differs
        assert not torch.allclose(tta_proba(net, y), net(y).softmax(dim=1), atol=1e-5)


@pytest.fixture(scope="module")
def strong_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("strong")
    cfg = compose_train(["experiment=baseline_64", "recipe=strong", "data.img_size=28", f"data.root={synthetic_root}",
                         "trainer.max_epochs=4", "logger=csv", *FAST], output_dir=out)
    return out, train(cfg, output_dir=out)


@pytest.mark.slow
def test_short_strong_run_beats_chance_and_reports_tta_beside_plain(strong_run):
    _, results = strong_run
    assert results["recipe"] == "strong" and results["augment"] is True  # baseline_64 has no augmentation itself
    assert results["test"]["acc"] > 0.3  # chance is 0.125
    tta = results["test_tta"]
    assert tta["acc"] > 0.3 and set(tta) >= {"scores", "acc", "f1", "confusion_matrix"}
    assert "test/acc" in results["summary"] and "test_tta/acc" in results["summary"]
    assert sum(map(sum, tta["confusion_matrix"])) == len(results["test"]["labels"])


def test_study_run_has_no_tta_scores(reference_run):
    assert reference_run[1]["test_tta"] is None and reference_run[1]["recipe"] == "study"


def test_sweep_report_names_the_recipe_and_shows_tta(strong_run, reference_run, tmp_path):
    for i, folder in enumerate([strong_run[0], reference_run[0]]):
        shutil.copytree(folder, tmp_path / "runs" / f"{i}_run")
    text = markdown(build_report(tmp_path))
    assert "- recipe: `strong`, `study` (conf/recipe/)" in text
    assert "test acc, TTA x8 (%)" in text


def test_ablation_table_groups_by_experiment_and_recipe(strong_run, reference_run, tmp_path, capsys):
    assert ablation_main([str(strong_run[0]), str(reference_run[0]), "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "| baseline_64 | `strong` | 0 |" in out and "| unet_28 | `study` | 0 |" in out
    rows = json.loads((tmp_path / "t.json").read_text())
    assert {r["recipe"] for r in rows} == {"strong", "study"} and all(r["runs"] == 1 for r in rows)
    assert ablation_main([str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert ablation_main([str(tmp_path / "empty")]) == 2
    assert "no completed run (a folder with results.json)" in capsys.readouterr().err


@pytest.mark.slow
def test_ema_weights_are_checkpointed_tested_and_exported(synthetic_root, tmp_path):
    cfg = compose_train(["model=baseline", "data.img_size=28", f"data.root={synthetic_root}", "trainer.max_epochs=3",
                         "logger=csv", "callbacks=ema", "callbacks.ema.decay=0.7", *FAST], output_dir=tmp_path)
    results = train(cfg, output_dir=tmp_path)
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if k.startswith("net."))
    # predict/export rebuild the network from state_dict: the average. Its test accuracy is the one reported.
    model = load_trained(tmp_path / "checkpoints" / "best.ckpt")
    data = np.load(synthetic_root / "bloodmnist.npz")
    probs = predict_proba(model.net, data["test_images"])
    assert probs.argmax(1).tolist() == results["test"]["predictions"]
    acc = float((probs.argmax(1) == data["test_labels"].ravel()).mean())
    assert acc == pytest.approx(results["test"]["acc"], abs=1e-6)
    report = export(model, "safetensors", tmp_path / "best.safetensors")
    assert report["checked"]
    exported = load_trained(tmp_path / "best.safetensors")
    for k, v in exported.net.state_dict().items():
        assert torch.equal(v, averaged["net." + k])
