#!/usr/bin/env python3
"""The figures behind ``bloodcls adapt``'s two constants: how many images BatchNorm statistics need
(``MIN_IMAGES``) and where the gate's guard sits (``MIN_GATE_ACCEPT``), on one trained model and a shifted lab.

    python scripts/adaptation_check.py <checkpoint> [--data bloodmnist|stained|darker] [--draws 10]

The lab: 2,000 BloodMNIST test cells at the model's size (``--data bloodmnist``, from ~/.medmnist) under the
second lab's stain and lamp shifts (hue, saturation_up, brightness_down at severity 3, as
scripts/make_lab_folder.py makes ``second_lab/``), or 1,000 learnable synthetic cells (tests/synthetic.py) under
tests/test_adapt.py's strong colour shift (``--data stained``) or its dimmer lamp (``--data darker``). Half is the pool adapted on, half held out. For N images drawn
from the pool (``--draws`` times each): held-out accuracy, and the share of the N images the gate (training
statistics) accepts after adaptation, which is what the guard reads. Then the far-OOD sets, each adapted on
itself. Prints one JSON line per row.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bloodcls.inference.adaptation import recompute_statistics  # noqa: E402
from bloodcls.inference.checkpoint import load_trained  # noqa: E402
from bloodcls.uncertainty.far_ood import far_ood_sets  # noqa: E402
from bloodcls.uncertainty.judgement import judge  # noqa: E402
from bloodcls.uncertainty.outputs import network_outputs  # noqa: E402

LAB_SHIFTS = ("hue", "saturation_up", "brightness_down")  # scripts/make_lab_folder.py's second lab


SYNTHETIC_SHIFTS = {"stained": ((0.6, 0.8, 1.3), -30), "darker": ((0.8, 0.8, 0.8), -10)}  # tests/test_adapt.py's


def shifted_lab(data: str, size: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N x S x S x 3 uint8 shifted cells, the same cells unshifted, labels)."""
    if data in SYNTHETIC_SHIFTS:
        from tests.synthetic import synthetic_split

        (gain, offset), (x, y) = SYNTHETIC_SHIFTS[data], synthetic_split(n // 8, size, seed=21)
        return np.clip(x.astype(np.float32) * np.array(gain) + offset, 0, 255).astype(np.uint8), x, y.ravel()
    from bloodcls.common.tensors import to_float_images
    from bloodcls.data.files import default_root, file_name
    from bloodcls.robustness.shifts import SHIFTS

    arrays = np.load(Path(default_root()).expanduser() / file_name(size))
    pick = np.random.default_rng(0).permutation(len(arrays["test_labels"]))[:n]
    clean = arrays["test_images"][pick]
    x = to_float_images(torch.from_numpy(np.ascontiguousarray(clean)))
    generator = torch.Generator().manual_seed(0)
    for name in LAB_SHIFTS:
        x = SHIFTS[name](x, 3, generator)
    return (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy(), clean, arrays["test_labels"][pick].ravel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", choices=("bloodmnist", *SYNTHETIC_SHIFTS), default="bloodmnist")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--sizes", default="4,8,16,32,64,128,256")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_trained(args.checkpoint)
    lab, clean, labels = shifted_lab(args.data, model.img_size)
    half = len(labels) // 2
    pool, held, y_held = lab[:half], lab[half:], torch.as_tensor(labels[half:]).long()

    def adapted(images: np.ndarray) -> torch.nn.Module:
        net = copy.deepcopy(model.net)
        recompute_statistics(net, images)
        return net

    def accepts(net: torch.nn.Module, images: np.ndarray) -> float:
        outputs = network_outputs(net, images)
        return float(judge(outputs.logits, outputs.features, model.trust).accepted.double().mean())

    def accuracy(net: torch.nn.Module, images: np.ndarray = held) -> float:
        return float((network_outputs(net, images).logits.argmax(1) == y_held).double().mean())

    full = adapted(pool)
    for name, net in (("as_is", model.net), ("adapted_on_pool", full)):
        print(json.dumps({name: {"accuracy": accuracy(net), "gate_accepts_lab": accepts(net, held),
                                 "clean_accuracy": accuracy(net, clean[half:]),
                                 "gate_accepts_clean": accepts(net, clean[half:])}}))
    rng = np.random.default_rng(1)
    for n in [int(v) for v in args.sizes.split(",")]:
        acc, own = [], []
        for _ in range(args.draws):
            images = pool[rng.choice(half, n, replace=False)]
            net = adapted(images)
            acc.append(accuracy(net))
            own.append(accepts(net, images))
        print(json.dumps({"n": n, "accuracy_mean": float(np.mean(acc)), "accuracy_min": float(np.min(acc)),
                          "guard_accepts_mean": float(np.mean(own)), "guard_accepts_min": float(np.min(own))}))
    for name, images in far_ood_sets(model.img_size, n=200).items():
        print(json.dumps({"far_ood": name, "n": len(images), "guard_accepts": accepts(adapted(images), images),
                          "lab_adapted_model_accepts": accepts(full, images)}))


if __name__ == "__main__":
    main()
