"""timm backbones (model=timm model.arch=...): built like timm builds them, trained, reported, predicted and
exported like the study's models, and a clear stop when ImageNet weights cannot be had."""

import json
import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import load_trained
from bloodcls.models import build_from_hparams, build_model, timm_backbone
from bloodcls.models.profiling import efficiency, parameter_counts
from tests.conftest import FAST
from tests.helpers import compose_train

ARCHS = ["resnet18", "convnext_atto", "efficientnet_b0", "vit_tiny_patch16_224"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [28, 64, 128])
def test_timm_architectures_build_run_and_count_like_timm(arch, size):
    if size == 28 and arch == "convnext_atto":
        with pytest.raises(UserError, match="cannot take 28 px inputs"):  # stride 32 with 2x2 downsampling convs
            build_model("timm", size, arch=arch)
        return
    net = build_model("timm", size, arch=arch).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, size, size))
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    kwargs = {"img_size": size} if arch.startswith("vit") else {}
    own = timm.create_model(arch, num_classes=8, **kwargs)
    assert parameter_counts(net)["params_trainable"] == sum(p.numel() for p in own.parameters())


def test_from_scratch_inputs_stay_in_unit_range_and_timm_layer_details_are_kept():
    torch.manual_seed(0)
    net = build_model("timm", 64, arch="resnet18", bn_momentum=0.01, bn_eps=1e-3, init="torch")
    assert torch.equal(net.mean, torch.zeros(1, 3, 1, 1)) and torch.equal(net.std, torch.ones(1, 3, 1, 1))
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 and m.eps == 1e-5 for m in bns)  # the recipe's Keras BN is not applied
    torch.manual_seed(0)
    own = timm.create_model("resnet18", num_classes=8)
    assert torch.equal(net.backbone.conv1.weight, own.conv1.weight)  # timm's init, not re-initialised


def test_resnet18_macs_grow_with_the_square_of_the_side():
    """thop counts timm's convolutions: ResNet-18 is 1.82 GMACs at 224 px, so (64/224)^2 of that at 64 px."""
    macs = efficiency(build_model("timm", 64, arch="resnet18"), 64)["macs"]
    assert macs / 1e6 == pytest.approx(1819 * (64 / 224) ** 2, rel=0.03)


def test_unknown_or_missing_arch_is_a_user_error():
    with pytest.raises(UserError, match=r"'resnet19' is not a timm architecture\. Close names: .*resnet18"):
        build_model("timm", 64, arch="resnet19")
    with pytest.raises(UserError, match="model=timm needs an architecture"):
        build_model("timm", 64, arch=None)


def test_pretrained_offline_stops_quickly_with_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(timm_backbone, "hub_reachable", lambda timeout=3.0: False)
    called = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: called.append(1))
    t0 = time.perf_counter()
    with pytest.raises(UserError) as err:
        build_model("timm", 64, arch="resnet18", pretrained=True)
    assert time.perf_counter() - t0 < 5 and not called
    text = str(err.value)
    assert "cannot be reached" in text and "model.pretrained_path=<file.safetensors>" in text and "resnet18" in text


def test_a_local_weights_file_loads_offline_and_sets_the_normalisation(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setattr(timm_backbone, "hub_reachable", lambda timeout=3.0: pytest.fail("must not probe the hub"))
    donor = timm.create_model("resnet18", num_classes=1000)
    save_file(donor.state_dict(), str(tmp_path / "resnet18.safetensors"))
    net = build_model("timm", 64, arch="resnet18", pretrained_path=str(tmp_path / "resnet18.safetensors"))
    assert torch.equal(net.backbone.conv1.weight, donor.conv1.weight)  # ImageNet body kept
    assert net.backbone.fc.out_features == 8  # classifier reset for 8 classes
    assert net.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    with pytest.raises(UserError, match="is not a file"):
        build_model("timm", 64, arch="resnet18", pretrained_path=str(tmp_path / "missing.safetensors"))


def test_experiments_compose_and_name_runs_by_architecture(tmp_path):
    cfg = compose_train(["model=timm", "model.arch=convnext_atto", "data.img_size=64"], output_dir=tmp_path)
    assert cfg.experiment_name == "convnext_atto_64" and cfg.run_name == "convnext_atto_64_s0"
    for exp, arch, size in [("resnet18_28", "resnet18", 28), ("vit_tiny_128", "vit_tiny_patch16_224", 128)]:
        cfg = compose_train([f"experiment={exp}"], output_dir=tmp_path)
        assert (cfg.experiment_name, cfg.model.arch, cfg.data.img_size, cfg.model.name) == (exp, arch, size, "timm")
        assert not cfg.model.pretrained


@pytest.fixture(scope="module")
def timm_run(synthetic_root, tmp_path_factory):
    from bloodcls.training import train

    out = tmp_path_factory.mktemp("timm_run")
    cfg = compose_train(["model=timm", "model.arch=test_resnet", "data.img_size=28", "trainer.max_epochs=4",
                         "logger=csv", f"data.root={synthetic_root}", *FAST], output_dir=out)
    return out, train(cfg, output_dir=out)


@pytest.mark.slow
def test_a_short_timm_run_beats_chance_and_records_its_architecture(timm_run):
    _, results = timm_run
    assert results["test"]["acc"] > 0.5  # chance is 1/8
    assert results["model"] == "timm" and results["arch"] == "test_resnet" and results["experiment"] == "test_resnet_28"
    assert results["efficiency"]["params_trainable"] == sum(
        p.numel() for p in timm.create_model("test_resnet", num_classes=8).parameters())


@pytest.mark.slow
def test_a_timm_checkpoint_round_trips_through_predict_and_onnx(timm_run, tmp_path, capsys):
    from bloodcls.cli.export import main as export_main
    from bloodcls.cli.predict import main as predict_main

    ckpt = timm_run[0] / "checkpoints" / "best.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # still plain weights
    model = load_trained(ckpt)
    assert model.hparams["arch"] == "test_resnet"
    rebuilt = build_from_hparams(raw["hyper_parameters"], weights=False)
    assert type(rebuilt.backbone) is type(model.net.backbone)
    img = (np.random.default_rng(0).random((28, 28, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "cell.png")
    assert predict_main([str(ckpt), str(tmp_path / "cell.png"), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    with torch.no_grad():
        expected = model.net(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).softmax(1)[0]
    assert result["probabilities"][model.class_names[0]] == pytest.approx(float(expected[0]), abs=1e-5)
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert export_main([str(ckpt), "--format", "onnx", "--output", str(out)]) == 0
    x = torch.rand(3, 3, 28, 28)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - model.net(x).numpy()).max() <= 1e-4


@pytest.mark.slow
def test_train_py_names_a_bad_architecture_and_exits_2(tmp_path):
    from tests.helpers import no_data, run_cli

    proc = run_cli("train.py", "model=timm", "model.arch=resnet19", "data.img_size=28", "logger=csv",
                   f"paths.log_dir={tmp_path}", *no_data(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "InstantiationException" not in proc.stderr
    assert proc.stderr.count("model.arch='resnet19' is not a timm architecture") == 1
