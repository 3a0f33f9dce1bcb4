"""Export a trained network for use outside this project, and prove the export computes the same thing.

    bloodcls export <checkpoint> --format onnx|torchscript|safetensors [--output PATH]

- ``onnx``: input ``images`` (N x 3 x S x S float32 RGB in [0, 1], any batch size), output
  ``logits`` (apply softmax for probabilities); model name, input size and class names are in the
  model's metadata. Checked with onnxruntime when it is installed.
- ``torchscript``: ``torch.jit.load``-able, same input and output; metadata in ``bloodcls.json``.
- ``safetensors``: the weights plus hyper-parameters, trust state and adaptation record, no pickle: the safest
  way to share a model; every command that takes a model reads it, and a model bundle (``bloodcls bundle``) is
  this file with its config.json and model card.

After writing, the export is run on sample inputs next to the PyTorch network; it is kept only if
every output matches within ``--atol`` (1e-4) and the judgement made from its outputs
(:func:`bloodcls.uncertainty.judgement.judge`: class, review flag, gate, prediction set) is the one made
from PyTorch's (for safetensors, with the trust state read back from the file). An existing file is never overwritten without ``--force``.
The checkpoint is loaded weights-only (:mod:`bloodcls.inference.checkpoint`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcls.common.checkpoints import write_safetensors
from bloodcls.common.files import atomic_write
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import TrainedModel, load_trained
from bloodcls.uncertainty.judgement import Judgement, judge
from bloodcls.uncertainty.outputs import network_outputs

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
ATOL = 1e-4
OPSET = 17


def metadata(model: TrainedModel) -> dict[str, Any]:
    return {
        "model": model.name,
        "img_size": model.img_size,
        "class_names": model.class_names,
        "input": f"N x 3 x {model.img_size} x {model.img_size} float32 RGB in [0, 1] "
                 "(centre square, bicubic resize, as bloodcls.inference.images.load_image)",
        "output": "logits, N x classes (softmax gives probabilities)",
        "source_checkpoint": str(model.path),
        "epoch": model.info.get("epoch"),
    }


def sample_inputs(img_size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))


def _export_onnx(model: TrainedModel, path: Path, opset: int) -> None:
    x = sample_inputs(model.img_size, n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.net, (x,), str(path), dynamo=False, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset)
    try:
        import onnx
    except ImportError:
        return
    proto = onnx.load(str(path))
    for key, value in metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value) if not isinstance(value, str) else value
    onnx.save(proto, str(path))


def _export_torchscript(model: TrainedModel, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.net, sample_inputs(model.img_size, n=2))
        torch.jit.save(traced, str(path), _extra_files={"bloodcls.json": json.dumps(metadata(model))})


def _export_safetensors(model: TrainedModel, path: Path) -> None:
    """The portable file (a bundle's model.safetensors is the same): weights, hyper-parameters, trust state and
    adaptation record."""
    write_safetensors(path, model.net.state_dict(), model.hparams,
                      model.trust.to_dict() if model.trust is not None else None, model.adapted_on)


def run_export(model: TrainedModel, fmt: str, path: Path, x: torch.Tensor) -> np.ndarray | None:
    """Outputs of the exported file on ``x`` (None when the runtime to check it is not installed)."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"images": x.numpy()})[0]
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.inference_mode():
            return loaded(x).numpy()
    reloaded = load_trained(path)
    with torch.inference_mode():
        return reloaded.net(x).numpy()


def _same_judgement(a: Judgement, b: Judgement) -> bool:
    """The same class, review flag, gate decision and prediction set for every image."""
    def parts(j: Judgement) -> list:
        return [j.predicted, j.review, j.accepted, j.sets, j.calibrated]

    return all(torch.equal(p, q) if isinstance(p, torch.Tensor) and isinstance(q, torch.Tensor) else p is q or p == q
               for p, q in zip(parts(a), parts(b), strict=True))


def export(model: TrainedModel, fmt: str, output: Path, atol: float = ATOL, opset: int = OPSET) -> dict[str, Any]:
    """Write ``output`` and check it against PyTorch; returns what was checked. Raises UserError on a mismatch."""
    if fmt not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    check: dict[str, Any] = {}

    def write_and_check(tmp: Path) -> None:  # kept only when it matches PyTorch
        {"onnx": lambda: _export_onnx(model, tmp, opset), "torchscript": lambda: _export_torchscript(model, tmp),
         "safetensors": lambda: _export_safetensors(model, tmp)}[fmt]()
        x = sample_inputs(model.img_size, n=4, seed=1)
        reference = network_outputs(model.net, x)
        expected = reference.logits.numpy()
        got = run_export(model, fmt, tmp, x)
        check.update(checked=got is not None, samples=len(x), atol=atol)
        if got is not None:
            diff = float(np.abs(got - expected).max())
            check["max_abs_diff"] = diff
            if not diff <= atol:
                raise UserError(
                    f"The {fmt} export of {model.path} differs from PyTorch by up to {diff:.3g} (> {atol:g}) on "
                    f"{len(x)} sample inputs, so it was not kept. Try another --opset or format, and report it."
                )
            trust = load_trained(tmp).trust if fmt == "safetensors" else model.trust  # ONNX/TorchScript: logits only
            same = _same_judgement(judge(reference.logits, reference.features, model.trust),
                                   judge(torch.from_numpy(got), reference.features, trust))
            check["same_judgement"] = same
            if not same:
                raise UserError(f"The {fmt} export of {model.path} gives another judgement (class, review flag, gate "
                                "or prediction set) than the checkpoint on sample inputs, so it was not kept. "
                                "Report it with the checkpoint.")

    atomic_write(output, write_and_check)  # same suffix on the temporary file: the readers go by it
    return check
