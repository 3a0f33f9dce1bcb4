"""The fast data path inside a real Trainer: coverage, no eval augmentation/shuffling, parity with the plain path."""

import json
from collections import defaultdict
from functools import partial

import lightning as L
import pytest
import torch

from bloodcls.cli.bench import main as bench_main
from bloodcls.data import BloodMNISTDataModule
from bloodcls.training.module import BloodCellClassifier

ADAM = partial(torch.optim.Adam, lr=1e-4)  # what conf/optimizer/adam.yaml builds


class Recorder(BloodCellClassifier):
    """Keeps what each step was fed."""

    def __init__(self, **kw):
        super().__init__(optimizer=ADAM, **kw)
        self.seen = defaultdict(list)

    def training_step(self, batch, batch_idx):
        self.seen[("train", self.current_epoch)].append(batch[0].detach().double().sum(dim=(1, 2, 3)))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.seen[("val", self.current_epoch)].append(batch[0].detach().clone())
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self.seen[("test", 0)].append(batch[0].detach().clone())
        return super().test_step(batch, batch_idx)


def _trainer(epochs=2):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def _as_float(images):
    return images.permute(0, 3, 1, 2).float() / 255


@pytest.mark.slow
def test_tensor_loader_in_a_trainer(synthetic_root):
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, batch_size=16, augment=False, on_device="true")
    model = Recorder(name="inception", img_size=28)
    _trainer(2).fit(model, datamodule=dm)
    train_sums = _as_float(dm.splits["train"][0]).double().sum(dim=(1, 2, 3))
    orders = []
    for epoch in range(2):
        seen = torch.cat(model.seen[("train", epoch)])
        assert len(seen) == len(train_sums)  # every sample, once
        assert torch.allclose(seen.sort().values, train_sums.sort().values)
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1])  # reshuffled between epochs


@pytest.mark.slow
def test_val_and_test_are_neither_augmented_nor_shuffled(synthetic_root):
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, batch_size=16, augment=True)
    model = Recorder(name="skip", img_size=28)
    trainer = _trainer(2)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    expected = _as_float(dm.splits["val"][0])
    for epoch in range(2):
        assert torch.equal(torch.cat(model.seen[("val", epoch)]), expected)
    assert torch.equal(torch.cat(model.seen[("test", 0)]), _as_float(dm.splits["test"][0]))


def test_both_paths_give_the_same_validation_loss(synthetic_root):
    torch.manual_seed(0)
    model = BloodCellClassifier(name="hybrid", img_size=28)
    losses = {}
    for loader in ("tensor", "torch"):
        dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, loader=loader, num_workers=0,
                                  eval_batch_size=32)
        (out,) = _trainer().validate(model, datamodule=dm, verbose=False)
        losses[loader] = out
    assert losses["tensor"]["val/loss"] == pytest.approx(losses["torch"]["val/loss"], rel=1e-5)
    assert losses["tensor"]["val/acc"] == losses["torch"]["val/acc"]


def test_channels_last_fast_path_matches(synthetic_root):
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, channels_last=True)
    dm.setup()
    x = dm.prepare_batch(dm.splits["val"][0][:8], train=False)
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    a = BloodCellClassifier(name="skip", img_size=28).eval()
    b = BloodCellClassifier(name="skip", img_size=28, channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert torch.allclose(a(x.contiguous()), b(x), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("bf16", [True, False])
def test_benchmark_runs_both_paths(synthetic_root, tmp_path, capsys, monkeypatch, bf16):
    import bloodcls.training.compute as compute

    monkeypatch.setattr(compute, "native_bf16", lambda: (bf16, "patched"))
    assert bench_main(["experiment=inception", f"data.root={synthetic_root}", "data.img_size=28", "--steps", "2",
                       "--reps", "2", "--warmup", "1", "--workers", "1", "--device", "cpu", "--threads", "1", "2",
                       "--json", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    (row,) = report["experiments"]
    assert set(row["paths"]) == {"plain", "fast", "tensor_fp32"}  # CUDA graphs are timed on CUDA only
    assert set(row["by_threads"]) == {"1", "2"} and row["paths"] == row["by_threads"]["1"]["paths"]
    assert row["by_threads"]["2"]["paths"]["fast"]["threads"] == 2
    plain, fast = (json.loads((tmp_path / "b.json").read_text())["experiments"][0]["paths"][k] for k in ("plain", "fast"))
    assert plain["settings"]["bf16"] is False and plain["settings"]["channels_last"] is False
    assert fast["settings"]["bf16"] is bf16 and fast["settings"]["channels_last"] is True  # native bf16 only
    like = row["paths"]["tensor_fp32"]["settings"]  # like with like: fast's loader, the old numerics
    assert like["bf16"] is False and like["channels_last"] is False
    assert row["speedup_train_vs_fp32"] == pytest.approx(
        row["paths"]["fast"]["train_images_per_s"] / row["paths"]["tensor_fp32"]["train_images_per_s"])
    for p in row["paths"].values():
        assert p["train_images_per_s"] > 0 and p["infer_images_per_s"] > 0 and len(p["reps_train_images_per_s"]) == 2
    assert row["speedup_train"] == pytest.approx(
        row["paths"]["fast"]["train_images_per_s"] / row["paths"]["plain"]["train_images_per_s"])
    assert "torch_grid_sample" in row["augmentation_ms_per_batch"]
    printed = capsys.readouterr().out
    assert "| inception | plain | 1 |" in printed and "| inception | fast | 2 |" in printed
    assert "fast/plain training" in printed and "like with like" in printed


def _fit_steps(compile_mode, synthetic_root, steps=4):
    torch.manual_seed(0)
    model = BloodCellClassifier(name="skip", img_size=28, compile=compile_mode, optimizer=ADAM)
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, batch_size=16, augment=True)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, deterministic=True)
    trainer.fit(model, datamodule=dm)
    return model


def test_graphs_switch_is_eager_on_the_cpu_with_the_same_loss_and_weights(synthetic_root):
    eager = _fit_steps(False, synthetic_root)
    graphs = _fit_steps("graphs", synthetic_root)
    assert graphs.compile_mode == "graphs" and not graphs.compiled
    assert graphs.net._compiled_call_impl is None  # nothing captured or compiled off CUDA
    for (name, a), (_, b) in zip(eager.state_dict().items(), graphs.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert eager.trainer.callback_metrics["train/loss"] == graphs.trainer.callback_metrics["train/loss"]


def test_compile_values_are_checked():
    from bloodcls.errors import UserError

    with pytest.raises(UserError, match=r"model.compile='graph' \(expected false, true or graphs"):
        BloodCellClassifier(name="skip", img_size=28, compile="graph")


def test_a_training_step_reads_nothing_back_from_the_device(synthetic_root, monkeypatch):
    """No .item()/bool()/tolist() in the step or its metric updates: on the GPU each would be a host sync."""
    model = BloodCellClassifier(name="inception", img_size=28)
    x, y = torch.rand(8, 3, 28, 28), torch.arange(8) % 8
    calls = []
    for attr in ("item", "tolist", "__bool__"):
        original = getattr(torch.Tensor, attr)
        monkeypatch.setattr(torch.Tensor, attr, lambda self, *a, _o=original, _n=attr, **k: calls.append(_n) or _o(self, *a, **k))
    model.training_step((x, y), 0)
    model._eval_step("val", (x, y))
    monkeypatch.undo()
    assert calls == []


def test_scores_and_predictions_leave_the_module_through_a_callback(synthetic_root):
    from bloodcls.training.callbacks import EvalResults

    outcome = EvalResults()
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, eval_batch_size=7)
    model = BloodCellClassifier(name="inception", img_size=28, tta=True)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[outcome])
    (logged,) = trainer.test(model, datamodule=dm, verbose=False)
    n_test = len(dm.splits["test"][1])
    assert len(outcome.predictions["test"]) == n_test and sum(map(sum, outcome.confusion["test"])) == n_test
    assert outcome.scores["test"]["test/acc"] == pytest.approx(logged["test/acc"])
    assert "test_tta/acc" in outcome.scores["test_tta"]
    assert not any(hasattr(model, a) for a in ("scores", "confusion", "test_predictions"))
