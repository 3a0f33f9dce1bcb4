"""How many test predictions of a trained checkpoint change when evaluated under CPU bf16 autocast.

    python scripts/bf16_eval_check.py <run>/checkpoints/best.ckpt ~/.medmnist/bloodmnist_64.npz

docs/results/cpu-fast-path.md: evaluation stays fp32 on a CPU because this count was not zero.
"""

import sys

import torch

from bloodcls.common.tensors import to_float_images
from bloodcls.data import load_npz
from bloodcls.inference.checkpoint import load_trained


def main(ckpt: str, npz: str) -> None:
    torch.set_num_threads(1)
    net = load_trained(ckpt).net.to(memory_format=torch.channels_last).eval()
    images, labels = load_npz(npz)["test"]
    x = to_float_images(torch.from_numpy(images)).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels).flatten().long()
    logits = {}
    with torch.no_grad():
        for name, bf16 in (("fp32", False), ("bf16", True)):
            parts = []
            for i in range(0, len(x), 256):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    parts.append(net(x[i:i + 256]).float())
            logits[name] = torch.cat(parts)
    a, b = logits["fp32"].argmax(1), logits["bf16"].argmax(1)
    print(f"{ckpt}: {int((a != b).sum())} of {len(a)} test predictions differ; accuracy fp32 "
          f"{(a == y).double().mean():.4f}, bf16 {(b == y).double().mean():.4f}; largest logit difference "
          f"{float((logits['fp32'] - logits['bf16']).abs().max()):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
