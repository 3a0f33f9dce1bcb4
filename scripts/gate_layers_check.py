#!/usr/bin/env python3
"""Which features should the "not a blood-cell image" gate read? The classifier's input (what it reads today)
against that input joined with the last convolutional block's output averaged over space: the far-OOD sets
turned away, and the second lab's cells accepted before and after adaptation (docs/results/own-images.md).

    OMP_NUM_THREADS=1 python scripts/gate_layers_check.py <run> [...] --lab outputs/lab --json out.json

Both gates are fitted as training fits the gate (Mahalanobis, Ledoit-Wolf, class means of a stratified sample of
4,000 training images, threshold on validation accepting 95 % with 95 % confidence) on the same network, so only
the features differ. The lab's pool and held-out images are those of scripts/lab_evidence.py (same seed); the
adaptation is ``bloodcls adapt``'s (BatchNorm statistics recomputed on the pool, gate statistics unchanged), and
adapting on 450 non-cell images (photo crops, noise, plain colours of another seed) checks that adapt's guard
would still refuse them. Nothing here changes the tool: it measures a candidate.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bloodcls.common.sampling import stratified_sample
from bloodcls.common.tensors import to_float_images
from bloodcls.data.files import default_root, file_name, load_npz
from bloodcls.inference.adaptation import MIN_GATE_ACCEPT, recompute_statistics
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.inputs import as_images
from bloodcls.uncertainty.far_ood import far_ood_sets
from bloodcls.uncertainty.ood import accept_threshold, fit_mahalanobis, mahalanobis_score, penultimate

sys.path.insert(0, str(Path(__file__).parent))
from lab_evidence import write_csvs  # noqa: E402  (the lab's pool and held-out images, as the evidence draws them)

GATES = ("classifier_input", "with_last_conv_block")


def last_conv_block(net: nn.Module, size: int) -> str:
    """The module whose 4-D output comes last before the classifier (traced on one blank image)."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: order.append(n) if torch.is_tensor(o) and o.dim() == 4
                                     else None) for n, m in net.named_modules() if n]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return order[-1]


@torch.no_grad()
def features(net: nn.Module, images: np.ndarray, block: str) -> dict[str, torch.Tensor]:
    """Today's gate features (the classifier's input, collected as the gate collects them) and those joined to the
    last convolutional block's output averaged over space."""
    pooled: list[torch.Tensor] = []
    hook = dict(net.named_modules())[block].register_forward_hook(
        lambda _m, _i, o: pooled.append(o.float().mean((2, 3))))
    net.eval()
    try:
        with penultimate(net) as seen:
            for start in range(0, len(images), 256):
                batch = to_float_images(torch.as_tensor(images[start:start + 256]))
                net(batch.contiguous(memory_format=torch.channels_last))
            z = torch.cat(seen)
    finally:
        hook.remove()
    return {"classifier_input": z, "with_last_conv_block": torch.cat([torch.cat(pooled), z], 1)}


def read(csv_path: Path, size: int) -> np.ndarray:
    with open(csv_path) as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    return np.stack([img for _, img in as_images([Path(p) for p in paths], size)])


def check(run: str, lab: Path) -> dict:
    model = load_trained(run)
    net, size = model.net, model.img_size
    block = last_conv_block(net, size)
    splits = load_npz(Path(default_root()) / file_name(size), size)
    x_train, y_train = splits["train"]
    index = np.sort(stratified_sample(np.asarray(y_train).flatten(), 4000, 0))
    train = features(net, np.asarray(x_train)[index], block)
    val = features(net, np.asarray(splits["val"][0]), block)
    gates = {}
    for g in GATES:
        fit = fit_mahalanobis(train[g], torch.as_tensor(np.asarray(y_train).flatten()[index]))
        threshold = accept_threshold(mahalanobis_score(val[g], fit["means"], fit["precision"]))
        gates[g] = (fit["means"], fit["precision"], threshold)

    def accepted(f: dict[str, torch.Tensor], g: str) -> float:
        means, precision, threshold = gates[g]
        return round(float((mahalanobis_score(f[g], means, precision) <= threshold).double().mean()), 4)

    with tempfile.TemporaryDirectory() as tmp:
        csvs = write_csvs(lab, Path(tmp))
        pool, held = read(csvs["pool_all"], size), read(csvs["heldout"], size)
    far = far_ood_sets(size, 200, 0)
    non_cells = far_ood_sets(size, 200, 1)
    non_cells = np.concatenate([non_cells["natural_crops"], non_cells["noise"], non_cells["uniform"][:50]])
    adapted = copy.deepcopy(net)
    recompute_statistics(adapted, pool)
    fooled = copy.deepcopy(net)
    recompute_statistics(fooled, non_cells)
    f_test, f_held = features(net, np.asarray(splits["test"][0]), block), features(net, held, block)
    f_far = {k: features(net, v, block) for k, v in far.items()}
    a_pool, a_held = features(adapted, pool, block), features(adapted, held, block)
    a_far = {k: features(adapted, v, block) for k, v in far.items()}
    f_fooled = features(fooled, non_cells, block)
    out = {"run": str(model.path), "name": model.name, "last_conv_block": block, "feature_dims":
           {g: int(train[g].shape[1]) for g in GATES}, "min_gate_accept": MIN_GATE_ACCEPT, "gates": {}}
    for g in GATES:
        out["gates"][g] = {
            "test_accepted": accepted(f_test, g),
            "far_ood_turned_away": {k: round(1 - accepted(v, g), 4) for k, v in f_far.items()},
            "lab_heldout_accepted": accepted(f_held, g),
            "adapted": {"pool_accepted": accepted(a_pool, g), "heldout_accepted": accepted(a_held, g),
                        "far_ood_turned_away": {k: round(1 - accepted(v, g), 4) for k, v in a_far.items()}},
            "adapted_on_non_cells_accepted": accepted(f_fooled, g),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--lab", type=Path, required=True, help="folder made by scripts/make_lab_folder.py")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    for run in args.runs:
        results.append(check(run, args.lab))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"script": "scripts/gate_layers_check.py", "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
