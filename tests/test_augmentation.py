import torch

from bloodcls.data import BloodMNISTDataModule
from bloodcls.data.augmentation import GeometricAugment, per_sample_transforms


def test_rotation_and_flip_are_exact_pixel_permutations():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 16, 16)
    y = GeometricAugment(min_area=1.0)(x)
    for i in range(64):
        candidates = [torch.rot90(x[i], k, (1, 2)) for k in range(4)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.allclose(y[i], c, atol=1e-5) for c in candidates)


def test_augmentation_keeps_shape_range_and_differs_per_sample():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32).expand(16, 3, 32, 32).contiguous()
    y = GeometricAugment()(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    distinct = {tuple(y[i].flatten()[:50].tolist()) for i in range(16)}
    assert len(distinct) > 8  # random per sample, not one draw for the batch


def test_zoom_crop_keeps_90_to_100_percent_area():
    aug = GeometricAugment()
    theta = aug.sample_matrices(1000, torch.device("cpu"))
    side = theta[:, 0, :2].norm(dim=1)  # scale of the output->input map
    assert side.min() >= 0.9**0.5 - 1e-6 and side.max() <= 1 + 1e-6
    offset = theta[:, :, 2].abs()
    assert (offset <= (1 - side).unsqueeze(1) + 1e-6).all()  # the crop stays inside the image


def test_datamodule_augments_train_only(synthetic_root):
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, batch_size=32, augment=True)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    torch.manual_seed(1)
    plain = dm.prepare_batch(x, train=False)
    assert torch.equal(plain, x.permute(0, 3, 1, 2).float() / 255)  # val/test untouched
    aug = dm.prepare_batch(x, train=True)
    assert aug.shape == plain.shape and 0 <= aug.min() and aug.max() <= 1
    assert not torch.equal(aug, plain)
    assert torch.equal(y, dm.splits["val"][1][: len(y)])  # labels unchanged
    dm_off = BloodMNISTDataModule(root=str(synthetic_root), img_size=28, augment=False)
    dm_off.setup()
    assert torch.equal(dm_off.prepare_batch(x, train=True), plain)


def test_per_sample_reference_pipeline():
    img = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    out = per_sample_transforms(28, augment=True)(img)
    assert out.shape == (3, 28, 28) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(per_sample_transforms(28, augment=False)(img), img.float() / 255, atol=1e-6)
