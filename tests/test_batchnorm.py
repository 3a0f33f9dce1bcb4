"""Precise BatchNorm statistics (bloodcls.training.batchnorm: recipe=study validates on them) and their sample."""

import numpy as np
import pytest
import torch
from torch import nn

from bloodcls.common.rundir import run_checkpoint
from bloodcls.common.sampling import stratified_sample
from bloodcls.data import BloodMNISTDataModule
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import load_trained
from bloodcls.training import train
from bloodcls.training.batchnorm import PreciseBatchNorm, recompute_batchnorm
from tests.conftest import FAST
from tests.helpers import compose_train


def _norms(net: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


def test_recompute_gives_the_exact_average_with_dropout_off_and_restores_the_network():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 1)
    net = nn.Sequential(conv, nn.Dropout(0.5), nn.BatchNorm2d(4, momentum=0.01)).train()
    batches = [torch.randn(8, 3, 5, 5) * (k + 1) + k for k in range(3)]
    with torch.no_grad():
        feats = [conv(x) for x in batches]  # what the BatchNorm sees with dropout off
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).reshape(4, -1).var(dim=1, unbiased=True) for f in feats]).mean(0)

    assert recompute_batchnorm(net, batches) == 3
    bn = net[2]
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert bn.momentum == 0.01 and net.training and net[1].training  # mode and momentum as before
    assert recompute_batchnorm(nn.Linear(2, 2), batches) == 0  # nothing to do without BatchNorm


def test_stratified_sample_keeps_the_class_shares_of_a_class_ordered_split():
    labels = np.repeat([0, 1, 2, 3], [100, 300, 590, 10])  # in class order, as a folder dataset's arrays are
    picked = stratified_sample(labels, 100, seed=3)
    assert len(picked) == len(set(picked.tolist())) == 100
    assert np.bincount(labels[picked], minlength=4).tolist() == [10, 30, 59, 1]  # 10 % of every class
    assert picked.tolist() == stratified_sample(labels, 100, seed=3).tolist()  # the same seed, the same images
    assert picked.tolist() != stratified_sample(labels, 100, seed=4).tolist()
    assert labels[picked[:20]].tolist() != sorted(labels[picked[:20]].tolist())  # classes mixed, not in blocks
    rare = stratified_sample(np.repeat([0, 1], [995, 5]), 10, seed=0)  # a class below one image of share keeps one
    assert np.bincount(np.repeat([0, 1], [995, 5])[rare]).tolist() == [9, 1]
    assert sorted(stratified_sample(labels, None, seed=0).tolist()) == list(range(1000))
    assert sorted(stratified_sample(labels, 5000, seed=0).tolist()) == list(range(1000))


def test_the_callback_recomputes_from_the_stratified_sample_not_the_first_images():
    torch.manual_seed(0)
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor([64, 64, 64, 64]))  # class-ordered
    images = (labels.view(-1, 1, 1, 1) * 60).expand(-1, 4, 4, 3).to(torch.uint8).contiguous()  # class c: 60 c

    class Data:
        splits = {"train": (images, labels)}
        eval_batch_size = 16

        @staticmethod
        def prepare_batch(x, train):
            return x.permute(0, 3, 1, 2).float() / 255

    class Module:
        net = nn.Sequential(nn.BatchNorm2d(3, momentum=0.01))
        device = torch.device("cpu")

    trainer = type("T", (), {"datamodule": Data(), "sanity_checking": False})()
    callback = PreciseBatchNorm(when="validation", max_images=32, seed=0)
    callback.on_validation_epoch_start(trainer, Module())
    assert np.bincount(labels[callback.sample(labels)].numpy()).tolist() == [8, 8, 8, 8]
    # the exact mean of the sample is the mean over all classes (90/255), not the first class's 0
    torch.testing.assert_close(Module.net[0].running_mean, torch.full((3,), 90 / 255))


def test_a_bad_when_is_refused_with_the_choices():
    with pytest.raises(UserError, match=r"callbacks.precise_bn.when='later' \(expected validation or test\)"):
        PreciseBatchNorm(when="later")


@pytest.mark.slow
@pytest.mark.parametrize("when", ["validation", "test"])
def test_precise_bn_run_checkpoints_and_tests_with_the_recomputed_statistics(when, synthetic_root, tmp_path):
    cfg = compose_train(["experiment=baseline_64", "+ablation=precise_bn", f"callbacks.precise_bn.when={when}",
                         "data.img_size=28", f"data.root={synthetic_root}", "trainer.max_epochs=3", "logger=csv", *FAST],
                        output_dir=tmp_path)
    results = train(cfg, output_dir=tmp_path)
    assert results["recipe"] == "study+precise_bn_full"
    assert results["test"]["acc"] > 0.3  # chance is 0.125

    # The best checkpoint's statistics are the exact ones for its weights: recomputing them again over
    # the training split (as the callback does) leaves them where they are.
    ckpt = run_checkpoint(tmp_path)
    # in the memory layout the run trained in (channels_last where data.channels_last=auto chose it)
    layout = bool(results["compute"]["channels_last"])
    net = load_trained(ckpt).net
    net = net.to(memory_format=torch.channels_last) if layout else net
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in _norms(net)]
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, channels_last=layout)
    dm.setup()

    def eval_batches(split):
        images = dm.splits[split][0]
        return (dm.prepare_batch(images[i:i + 256], train=False) for i in range(0, len(images), 256))

    def worst(stats) -> float:
        """The largest difference from ``saved``, in units of the tolerance (above 1: not the same statistics)."""
        return max(float(((now - then).abs() / (5e-4 + 2e-3 * then.abs())).max())
                   for (mean, var), (mean0, var0) in zip(stats, saved, strict=True)
                   for now, then in ((mean, mean0), (var, var0)))

    with torch.no_grad():  # the test was scored with the checkpoint as it is on disk now
        predictions = torch.cat([net.eval()(x) for x in eval_batches("test")]).argmax(1)
    assert (predictions == dm.splits["test"][1].view(-1)).float().mean().item() == pytest.approx(results["test"]["acc"])
    # The callback sums the same images in another order (its stratified sample), and on another processor the
    # kernels differ: variances then move by up to ~5e-4 relative (AVX512), so the tolerance is 2e-3 relative. It
    # still tells statistics apart: those of the 80 test images, from the same distribution, miss it by far.
    recompute_batchnorm(net, eval_batches("test"))
    assert worst([(m.running_mean.clone(), m.running_var.clone()) for m in _norms(net)]) > 3
    recompute_batchnorm(net, eval_batches("train"))
    assert worst([(m.running_mean, m.running_var) for m in _norms(net)]) <= 1
    assert torch.load(ckpt, weights_only=True).get("precise_batchnorm") is (True if when == "test" else None)


@pytest.mark.slow
def test_scoring_a_checkpoint_you_hand_in_never_rewrites_it(synthetic_root, tmp_path):
    run = tmp_path / "run"
    train(compose_train(["experiment=baseline_64", "data.img_size=28", f"data.root={synthetic_root}",
                         "trainer.max_epochs=1", "logger=csv", *FAST], output_dir=run), output_dir=run)
    mine = tmp_path / "mine.ckpt"  # a checkpoint whose statistics the recompute would certainly change
    ckpt = torch.load(run_checkpoint(run), weights_only=True)
    for name, value in ckpt["state_dict"].items():
        if name.endswith("running_mean"):
            value.zero_()
    torch.save(ckpt, mine)
    before = mine.read_bytes()
    scored = tmp_path / "scored"
    results = train(compose_train(["experiment=baseline_64", "data.img_size=28", f"data.root={synthetic_root}",
                                   "+ablation=running_bn", "train=false", f"ckpt_path={mine}", "logger=csv", *FAST],
                                  output_dir=scored), output_dir=scored)
    assert results["recipe"] == "study+running_bn" and results["test"]["acc"] > 0.3  # scored with recomputed statistics
    assert mine.read_bytes() == before


@pytest.mark.slow
def test_after_one_epoch_validation_reads_what_the_test_reads(synthetic_root, tmp_path):
    """The quick start's first progress line: with the study's BatchNorm momentum and running statistics, one
    epoch read 18.6 % on validation for a model that scored 82 % on test; recipe=study now validates on exact
    statistics, so the two agree. The synthetic run keeps the recipe's own momentum (no FAST bn_momentum)."""
    overrides = [o for o in FAST if not o.startswith("model.bn_momentum")]
    cfg = compose_train(["experiment=baseline_64", "data.img_size=28", f"data.root={synthetic_root}",
                         "trainer.max_epochs=1", "logger=csv", "callbacks.early_stopping=null", *overrides],
                        output_dir=tmp_path)
    results = train(cfg, output_dir=tmp_path)
    val, test = results["val"]["best"]["val/acc"], results["test"]["acc"]
    assert test > 0.5  # it learned (chance 0.125)
    assert abs(val - test) <= 0.10, (val, test)
