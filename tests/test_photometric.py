"""The robust recipe's photometric augmentation (data.augment=robust) and its configs."""

from types import SimpleNamespace

import hydra
import pytest
import torch

from bloodcls.data import BloodMNISTDataModule
from bloodcls.data.augmentation import GeometricAugment, PhotometricAugment, RandomJPEG, RandomResample
from bloodcls.errors import DataError
from tests.helpers import compose_train

OFF = {k: 0.0 for k in ("jitter_p", "gamma_p", "blur_p", "motion_p", "resample_p", "noise_p", "jpeg_p")}


def _batch(n=32, size=32, seed=0):
    torch.manual_seed(seed)
    return torch.rand(1, 3, size, size).expand(n, 3, size, size).contiguous()


def test_keeps_shape_range_and_is_random_per_sample():
    x = _batch()
    torch.manual_seed(1)
    y = PhotometricAugment(img_size=32)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert 0 <= y.min() and y.max() <= 1
    distinct = {tuple(y[i].flatten()[:64].tolist()) for i in range(len(y))}
    assert len(distinct) > len(y) // 2  # drawn per sample, not once per batch


def test_each_step_alone_changes_some_images_and_keeps_range():
    x = _batch(64)
    for step in OFF:
        torch.manual_seed(2)
        y = PhotometricAugment(img_size=32, **{**OFF, step: 1.0})(x)
        changed = (y - x).abs().flatten(1).amax(1) > 1 / 255
        assert changed.any(), step
        assert 0 <= y.min() and y.max() <= 1, step


def test_all_probabilities_zero_is_the_identity():
    x = _batch()
    aug = PhotometricAugment(img_size=32, **OFF)
    assert len(aug.steps) == 0 and torch.equal(aug(x), x)


@pytest.mark.parametrize("probabilities", [{}, OFF])
def test_moving_the_module_keeps_it_a_working_module(probabilities):
    """``.to()``, ``.double()`` and a parent's moves go through ``nn.Module._apply``: the stack must not override it."""
    aug = PhotometricAugment(img_size=32, **probabilities)
    assert aug.to("cpu") is aug and aug.double() is aug
    parent = torch.nn.Sequential(aug).float()
    assert parent[0] is aug
    y = aug(_batch())
    assert y.shape == (32, 3, 32, 32) and 0 <= y.min() and y.max() <= 1


def test_subset_steps_leave_unpicked_images_alone():
    x = _batch(64)
    for step in (RandomJPEG(p=0.3), RandomResample(p=0.3)):
        torch.manual_seed(3)
        y = step(x)
        changed = (y - x).abs().flatten(1).amax(1) > 1e-6
        assert 0 < changed.sum() < len(x)


def _changed(x, y):
    return (y - x).abs().flatten(1).amax(1) > 1e-6


def test_share_keeps_the_rest_of_the_batch_clean():
    x = _batch(400)
    always = {**OFF, "jitter_p": 1.0}  # every touched image changes, so "changed" counts the share
    torch.manual_seed(4)
    assert torch.equal(PhotometricAugment(img_size=32, **always, share=0.0)(x), x)
    changed = _changed(x, PhotometricAugment(img_size=32, **always, share=0.25)(x)).float().mean()
    assert 0.18 < changed < 0.32
    assert _changed(x, PhotometricAugment(img_size=32, **always)(x)).all()


def test_ramp_grows_the_share_over_the_first_epochs():
    aug = PhotometricAugment(img_size=32, share=0.5, ramp_epochs=10)
    assert [aug.share_at(e) for e in (0, 5, 10, 15)] == [0.0, 0.25, 0.5, 0.5]
    assert aug.share_at(None) == 0.5  # outside training: the full share
    x = _batch(64)
    torch.manual_seed(6)
    assert torch.equal(PhotometricAugment(img_size=32, ramp_epochs=4)(x, epoch=0), x)


@pytest.mark.parametrize("bad", [{"share": 1.5}, {"share": -0.1}, {"ramp_epochs": -1}])
def test_bad_share_or_ramp_is_one_config_message(bad):
    with pytest.raises(DataError, match=r"data.photometric.share between 0 and 1"):
        BloodMNISTDataModule(img_size=28, augment="robust", photometric=bad)


def test_the_datamodule_passes_the_epoch_to_the_ramp():
    dm = BloodMNISTDataModule(img_size=28, augment="robust", photometric={**OFF, "jitter_p": 1.0, "ramp_epochs": 5})
    dm.trainer = SimpleNamespace(current_epoch=0, training=True)
    x = (torch.rand(16, 28, 28, 3) * 255).to(torch.uint8)
    dm.augment = False  # the photometric steps alone
    first = dm.prepare_batch(x, train=True)
    assert torch.equal(first, dm.prepare_batch(x, train=False))  # epoch 0 of the ramp: untouched
    dm.trainer.current_epoch = 5
    assert not torch.equal(dm.prepare_batch(x, train=True), first)


def test_same_seed_same_augmentation():
    x = _batch()
    aug = PhotometricAugment(img_size=32)
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    assert torch.equal(a, aug(x))  # EpochSeed reseeds torch: runs stay reproducible


def test_datamodule_robust_augments_train_batches_only_and_keeps_labels(synthetic_root):
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, batch_size=32, augment="robust")
    dm.setup()
    assert isinstance(dm.augmenter, GeometricAugment) and isinstance(dm.photometric, PhotometricAugment)
    x, y = next(iter(dm.train_dataloader()))
    plain = x.permute(0, 3, 1, 2).float() / 255
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    xa, ya = dm.on_after_batch_transfer((x, y), 0)
    assert xa.shape == plain.shape and 0 <= xa.min() and xa.max() <= 1
    assert torch.equal(ya, y.long())
    assert not torch.equal(xa, plain)
    dm.trainer = SimpleNamespace(training=False)
    xe, ye = dm.on_after_batch_transfer((x, y), 0)
    assert torch.equal(xe, plain) and torch.equal(ye, y.long())


def test_study_augmentation_settings_are_unchanged(synthetic_root):
    for augment in (True, False):
        dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, augment=augment)
        assert dm.photometric is None and dm.augment is augment


def test_bad_settings_are_user_errors():
    with pytest.raises(DataError, match="true, false or robust"):
        BloodMNISTDataModule(img_size=28, augment="strong")
    with pytest.raises(DataError, match="data.photometric"):
        BloodMNISTDataModule(img_size=28, augment="robust", photometric={"sharpness": 0.3})


@pytest.mark.parametrize(("experiment", "model", "size"), [("baseline_64_robust", "baseline", 64),
                                                          ("skip_robust", "skip", 128)])
def test_robust_experiments_compose_and_instantiate(experiment, model, size, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], output_dir=tmp_path)
    assert (cfg.model.name, cfg.data.img_size, cfg.data.augment, cfg.experiment_name) == (model, size, "robust",
                                                                                          experiment)
    # The study's protocol otherwise, but a 10x learning rate: augmented batches learn slowly at 1e-4.
    assert cfg.model.optimizer.lr == 1e-3 and cfg.trainer.max_epochs == 40
    assert cfg.model.scheduler._target_.endswith("ReduceLROnPlateau")
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm.photometric, PhotometricAugment) and len(dm.photometric.steps) == 7
    x = torch.rand(4, 3, size, size)
    assert dm.photometric(x).shape == x.shape
