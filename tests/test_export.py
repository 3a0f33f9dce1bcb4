"""Exports compute what the PyTorch network computes (within 1e-4), and are never written over silently."""

import json

import numpy as np
import pytest
import torch

from bloodcls.cli.export import main
from bloodcls.errors import UserError
from bloodcls.inference import exporters as export_mod
from bloodcls.inference.checkpoint import load_trained


def _inputs(n=3):
    return torch.rand(n, 3, 28, 28, generator=torch.Generator().manual_seed(7))


def _reference(trained_checkpoint, x):
    with torch.no_grad():
        return load_trained(trained_checkpoint).net(x).numpy()


def test_onnx_parity(trained_checkpoint, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    assert main([str(trained_checkpoint), "--format", "onnx", "--output", str(out)]) == 0
    assert "matches PyTorch" in capsys.readouterr().out
    x = _inputs(3)  # another batch size than the export's sample: the batch axis is dynamic
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"images": x.numpy()})[0]
    assert np.abs(got - _reference(trained_checkpoint, x)).max() <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["model"] == "unet" and json.loads(meta["class_names"])[7] == "platelet"


def test_torchscript_parity(trained_checkpoint, tmp_path):
    out = tmp_path / "model.pt"
    assert main([str(trained_checkpoint), "--format", "torchscript", "--output", str(out)]) == 0
    extra = {"bloodcls.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    x = _inputs(5)
    with torch.no_grad():
        got = loaded(x).numpy()
    assert np.abs(got - _reference(trained_checkpoint, x)).max() <= 1e-4
    assert json.loads(extra["bloodcls.json"])["img_size"] == 28


def test_safetensors_export_loads_back_for_prediction(trained_checkpoint, tmp_path):
    out = tmp_path / "model.safetensors"
    assert main([str(trained_checkpoint), "--format", "safetensors", "--output", str(out)]) == 0
    model = load_trained(out)
    assert (model.name, model.img_size, model.class_names) == ("unet", 28, load_trained(trained_checkpoint).class_names)
    x = _inputs(2)
    with torch.no_grad():
        assert torch.equal(model.net(x), torch.from_numpy(_reference(trained_checkpoint, x)))


def test_existing_output_is_kept_unless_forced(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pt"
    out.write_text("precious")
    with pytest.raises(SystemExit) as stop:
        main([str(trained_checkpoint), "--format", "torchscript", "--output", str(out)])
    assert stop.value.code == 2 and "--force" in capsys.readouterr().err
    assert out.read_text() == "precious"
    assert main([str(trained_checkpoint), "--format", "torchscript", "--output", str(out), "--force"]) == 0
    assert out.read_bytes() != b"precious"


def test_an_export_that_disagrees_is_not_kept(trained_checkpoint, tmp_path, monkeypatch):
    model = load_trained(trained_checkpoint)
    monkeypatch.setattr(export_mod, "run_export", lambda m, fmt, path, x: m.net(x).detach().numpy() + 1e-3)
    out = tmp_path / "model.pt"
    with pytest.raises(UserError, match="differs from PyTorch by up to 0.001"):
        export_mod.export(model, "torchscript", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_export_whose_judgement_differs_is_not_kept(trained_checkpoint, tmp_path, monkeypatch):
    """Within a loose --atol the logits pass, but the class they give differs: the judgement check refuses it."""
    model = load_trained(trained_checkpoint)

    def swapped(m, fmt, path, x):  # the top two classes of each image swapped
        logits = m.net(x).detach()
        top2 = logits.topk(2, dim=1).indices
        rows = torch.arange(len(logits))
        out = logits.clone()
        out[rows, top2[:, 0]], out[rows, top2[:, 1]] = logits[rows, top2[:, 1]], logits[rows, top2[:, 0]]
        return out.numpy()

    monkeypatch.setattr(export_mod, "run_export", swapped)
    out = tmp_path / "model.pt"
    with pytest.raises(UserError, match="gives another judgement"):
        export_mod.export(model, "torchscript", out, atol=1e9)
    assert not out.exists()
    monkeypatch.setattr(export_mod, "run_export", lambda m, fmt, path, x: m.net(x).detach().numpy())
    assert export_mod.export(model, "torchscript", out)["same_judgement"] is True
