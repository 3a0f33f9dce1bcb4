import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodcls import data as data_mod
from bloodcls.data import (
    BloodMNISTDataModule,
    TensorBatches,
    class_weights,
    ensure_file,
    load_npz,
)
from bloodcls.errors import DataError
from tests.synthetic import synthetic_split


def _write(path, **overrides):
    arrays = {}
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        x, y = synthetic_split(n, 28, seed=1)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_class_weight_formula():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 4 + list(range(3, 8)))  # 17 samples
    w = class_weights(labels, 8)
    n = len(labels)
    assert w[0].item() == pytest.approx(n / (8 * 6))
    assert w[1].item() == pytest.approx(n / (8 * 2))
    assert w[7].item() == pytest.approx(n / 8)
    # balanced: every class contributes equally to the weighted loss
    counts = np.bincount(labels, minlength=8)
    assert np.allclose(w.numpy() * counts, n / 8)


def test_class_weights_absent_class_gets_zero():
    w = class_weights(np.array([0, 0, 1]), 8)
    assert w[2:].eq(0).all() and w[0] == pytest.approx(3 / 16)


def test_load_valid_file(tmp_path):
    splits = load_npz(_write(tmp_path / "bloodmnist.npz"), 28)
    x, y = splits["train"]
    assert x.shape == (32, 28, 28, 3) and x.dtype == np.uint8
    assert y.shape == (32,) and y.dtype == np.int64


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"val_labels": None}, r"keys \['val_labels'\] are missing"),
        ({"train_images": np.zeros((4, 28, 28, 3), np.float32)}, "dtype float32.*uint8"),
        ({"train_images": np.zeros((4, 28, 28), np.uint8)}, r"shape \(4, 28, 28\).*N x S x S x 3"),
        ({"test_images": np.zeros((0, 28, 28, 3), np.uint8), "test_labels": np.zeros((0, 1), np.uint8)}, "test split is empty"),
        ({"val_labels": np.full((16, 1), 9, np.uint8)}, r"integers in 0..7.*\[9, 9\]"),
        ({"train_labels": np.zeros((3, 1), np.uint8)}, "32 images but 3 labels"),
    ],
)
def test_invalid_files_name_the_problem(tmp_path, overrides, match):
    path = _write(tmp_path / "bloodmnist.npz", **overrides)
    with pytest.raises(DataError, match=match) as err:
        load_npz(path, 28)
    assert str(path) in str(err.value)


def test_wrong_image_size(tmp_path):
    with pytest.raises(DataError, match="holds 28 px images but 64 px"):
        load_npz(_write(tmp_path / "bloodmnist_64.npz"), 64)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", "truncate"])
def test_truncated_or_corrupt_file(tmp_path, content):
    path = tmp_path / "bloodmnist.npz"
    if content == "truncate":
        full = _write(tmp_path / "full.npz").read_bytes()
        path.write_bytes(full[: len(full) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_npz(path, 28)
    assert str(path) in str(err.value) and "make_bloodmnist.py" in str(err.value)


def test_missing_file_offline_message(tmp_path, monkeypatch):
    import medmnist.dataset

    def no_network(*args, **kwargs):
        raise RuntimeError("Automatic download failed!")

    monkeypatch.setattr(medmnist.dataset.BloodMNIST, "download", no_network)
    with pytest.raises(DataError) as err:
        ensure_file(tmp_path, 128, download=True)
    msg = str(err.value)
    for part in ("bloodmnist_128.npz", str(tmp_path), "https://zenodo.org/records/10519652/files/bloodmnist_128.npz",
                 "data.root=", "download failed"):
        assert part in msg
    with pytest.raises(DataError, match="downloads are off"):
        ensure_file(tmp_path, 64, download=False)


def test_unknown_size_is_rejected(tmp_path):
    with pytest.raises(DataError, match="no 100 px release"):
        ensure_file(tmp_path, 100)


def test_unofficial_md5_warns_once(tmp_path, caplog):
    path = _write(tmp_path / "bloodmnist.npz")
    data_mod._warned_md5.discard(str(path))
    with caplog.at_level(logging.WARNING, logger="bloodcls.data"):
        data_mod.check_md5(path, 28)
        data_mod.check_md5(path, 28)
    warnings = [r for r in caplog.records if "not the official" in r.message]
    assert len(warnings) == 1


def _batches(n=103, bs=16, **kw):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 3).contiguous()
    labels = torch.arange(n)
    return TensorBatches(images, labels, bs, **kw)


def test_tensor_batches_visit_every_sample_once_per_epoch():
    epoch = {"n": 0}
    loader = _batches(shuffle=True, seed=3, epoch_fn=lambda: epoch["n"])
    seen = []
    for ep in range(3):
        epoch["n"] = ep
        order = torch.cat([y for _, y in loader])
        assert len(loader) == 7
        assert sorted(order.tolist()) == list(range(103))
        seen.append(order)
    assert not torch.equal(seen[0], seen[1])  # reshuffled each epoch
    epoch["n"] = 1
    assert torch.equal(torch.cat([y for _, y in loader]), seen[1])  # same seed+epoch, same order
    for x, y in loader:  # images travel with their labels
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_eval_batches_are_in_order():
    loader = _batches(shuffle=False)
    assert torch.equal(torch.cat([y for _, y in loader]), torch.arange(103))


def test_ddp_shards_cover_eval_once_and_train_evenly():
    eval_parts = [torch.cat([y for _, y in _batches(rank=r, world_size=3)]) for r in range(3)]
    assert sorted(torch.cat(eval_parts).tolist()) == list(range(103))  # nothing dropped or doubled
    train = [_batches(shuffle=True, rank=r, world_size=3) for r in range(3)]
    assert len({len(t) for t in train}) == 1  # same number of steps on every rank
    parts = [torch.cat([y for _, y in t]) for t in train]
    assert len(set(torch.cat(parts).tolist())) == sum(len(p) for p in parts)  # disjoint


def test_datamodule_setup_and_weights(synthetic_root):
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, batch_size=16)
    dm.setup()
    assert dm.split_sizes() == {"train": 192, "val": 48, "test": 80}
    assert torch.allclose(dm.class_weights, torch.ones(8))
    assert dm.class_names[3] == "immature_granulocytes" and len(dm.class_names) == 8
    x, y = next(iter(dm.train_dataloader()))
    out = dm.prepare_batch(x, train=False)
    assert out.shape == (16, 3, 28, 28) and out.dtype == torch.float32
    assert torch.equal(out, x.permute(0, 3, 1, 2).float() / 255)


def test_datamodule_rejects_bad_options(synthetic_root):
    with pytest.raises(DataError, match="data.loader"):
        BloodMNISTDataModule(root=str(synthetic_root), loader="pil")
    with pytest.raises(DataError, match="data.on_device"):
        BloodMNISTDataModule(root=str(synthetic_root), on_device="maybe")
    with pytest.raises(DataError, match=r"data.augment='maybe' \(expected true, false or robust\)"):
        BloodMNISTDataModule(root=str(synthetic_root), augment="maybe")
    with pytest.raises(DataError, match=r"data.channels_last='sometimes' \(expected auto, true or false\)"):
        BloodMNISTDataModule(root=str(synthetic_root), channels_last="sometimes")


def test_train_class_weights_before_and_after_setup(synthetic_root):
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28)
    before = dm.train_class_weights()  # what train() hands the model, before the trainer sets the data up
    dm.setup()
    assert torch.equal(before, dm.class_weights) and torch.equal(dm.train_class_weights(), dm.class_weights)
    assert torch.equal(before, class_weights(dm.splits["train"][1], 8))


def test_real_data_tests_skip_on_every_file_they_read(tmp_path):
    from tests.conftest import SHARED_FILES, shared_data_missing

    (tmp_path / "make_bloodmnist.py").write_text("")  # the builder alone: the split list and tar parts are missing
    assert shared_data_missing(tmp_path) == ["bloodmnist_split.csv", "pbc200.part1.tar", "pbc200.part2.tar",
                                             "pbc200.part3.tar"]
    for name in SHARED_FILES:
        (tmp_path / name).write_text("")
    assert shared_data_missing(tmp_path) == []
    script_only = '"make_bloodmnist.py")' + ".is_file()"  # the old skip condition, split so this file lacks it
    by_script = [p.name for p in Path(__file__).parent.glob("test_*.py") if script_only in p.read_text()]
    assert by_script == []  # every real-data test uses conftest's needs_shared_data
