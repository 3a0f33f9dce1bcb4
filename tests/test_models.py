import pytest
import torch
from torch import nn

from bloodcls.errors import UserError
from bloodcls.models import build_model, list_models, model_names, model_spec, register_model, study
from bloodcls.models.profiling import operation_counts, parameter_counts

# Every study row of every registered model: (model, experiment, the study's figures from bloodcls.models.study)
STUDY_ROWS = [(name, exp, row) for name in list_models() for exp, row in model_spec(name).study.items()]


def test_the_registry_covers_the_studys_seven_rows():
    assert sorted(exp for _, exp, _ in STUDY_ROWS) == sorted(study.EXPERIMENTS)


@pytest.mark.parametrize(("name", "experiment", "row"), STUDY_ROWS, ids=[e for _, e, _ in STUDY_ROWS])
def test_parameter_counts_match_study(name, experiment, row):
    counts = parameter_counts(build_model(name, row["img_size"]))
    assert counts["params_trainable"] == row["trainable"]
    assert counts["params_with_bn_stats"] == row["with_bn"]
    assert round(counts["memory_mib"], 2) == row["mib"]


@pytest.mark.parametrize(("name", "experiment", "row"), [r for r in STUDY_ROWS if r[1] not in ("baseline_128", "baseline_aug")],
                         ids=[e for _, e, _ in STUDY_ROWS if e not in ("baseline_128", "baseline_aug")])
def test_macs_match_study(name, experiment, row):
    model = build_model(name, row["img_size"])
    ops = operation_counts(model, row["img_size"])
    assert ops["macs"] / 1e6 == pytest.approx(row["macs_m"], abs=0.05)
    assert ops["flops"] == 2 * ops["macs"]
    # thop's bookkeeping buffers must not leak into the caller's model
    assert not any("total_ops" in k for k, _ in model.named_buffers())


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="'skip' is already registered"):
        register_model("skip")(lambda **kw: None)
    with pytest.raises(ValueError, match="'timm' is already registered"):
        register_model("timm")(lambda **kw: None)
    assert model_spec("inception").summary.startswith("Architecture 3") and model_spec("unet").study["unet"]["acc"] == 96.40


@pytest.mark.parametrize("name", list_models())
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
