import pytest
import torch
from torch import nn

from bloodcls.errors import UserError
from bloodcls.models import build_model, model_names
from bloodcls.profiling import operation_counts, parameter_counts

# The reference study's table (../shared/reference_study.md): trainable, with BN statistics, MiB, MACs (M).
STUDY = {
    "baseline_64": ("baseline", 64, 1_143_432, 1_143_880, 4.36, 43.3),
    "baseline_128": ("baseline", 128, 4_289_160, 4_289_608, 16.36, 173.0),
    "baseline_aug": ("baseline", 128, 4_289_160, 4_289_608, 16.36, 173.0),
    "unet": ("unet", 128, 2_191_432, 2_191_880, 8.36, 170.9),
    "inception": ("inception", 128, 36_828, 37_164, 0.14, 61.2),
    "skip": ("skip", 128, 307_112, 308_008, 1.17, 642.4),
    "hybrid": ("hybrid", 128, 45_124, 45_524, 0.17, 77.1),
}


@pytest.mark.parametrize("experiment", list(STUDY))
def test_parameter_counts_match_study(experiment):
    name, size, trainable, with_bn, mib, _ = STUDY[experiment]
    counts = parameter_counts(build_model(name, size))
    assert counts["params_trainable"] == trainable
    assert counts["params_with_bn_stats"] == with_bn
    assert round(counts["memory_mib"], 2) == mib


@pytest.mark.parametrize("experiment", ["baseline_64", "unet", "inception", "skip", "hybrid"])
def test_macs_match_study(experiment):
    name, size, *_, macs_m = STUDY[experiment]
    model = build_model(name, size)
    ops = operation_counts(model, size)
    assert ops["macs"] / 1e6 == pytest.approx(macs_m, abs=0.05)
    assert ops["flops"] == 2 * ops["macs"]
    # thop's bookkeeping buffers must not leak into the caller's model
    assert not any("total_ops" in k for k, _ in model.named_buffers())


@pytest.mark.parametrize("name", ["baseline", "unet", "inception", "skip", "hybrid"])
@pytest.mark.parametrize("size", [28, 64, 128, 224])
def test_forward_shapes(name, size):
    model = build_model(name, size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 8)
    assert torch.isfinite(out).all()


def test_keras_equivalent_defaults():
    model = build_model("skip", 64)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(torch.count_nonzero(m.bias) == 0 for m in layers)
    # Glorot-uniform bound sqrt(6 / (fan_in + fan_out)) for the first 3x3 conv: 3*9 in, 32*9 out
    bound = (6 / (27 + 288)) ** 0.5
    w = model.stage1[0][0].weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_keras_layer_order_conv_relu_bn():
    block = build_model("baseline", 64).features[0][0]
    assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]


def test_bn_momentum_override():
    model = build_model("inception", 64, bn_momentum=0.5)
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.5}


def test_unknown_model_name_is_a_user_error():
    with pytest.raises(UserError, match="Unknown model 'resnet50'.*baseline, hybrid, inception, skip, unet"):
        build_model("resnet50")
    assert model_names() == ["baseline", "hybrid", "inception", "skip", "unet"]
