"""The shift suite's figures: accuracy vs. severity per shift, and one image under every shift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bloodcls.robustness.shifts import SHIFTS
from bloodcls.robustness.suite import shift_generator


def plot(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Accuracy vs. severity (0 = clean), one line per shift, the mean over shifts in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [0, *result["severities"]]
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab20")
    for i, (name, r) in enumerate(result["shifts"].items()):
        ax.plot(x, [100 * result["clean_acc"], *(100 * a for a in r["acc"])], marker="o", ms=3, lw=1.2,
                color=cmap(i % 20), label=name)
    ax.plot(x, [100 * result["clean_acc"], *(100 * a for a in result["per_severity"]["acc"])], color="black",
            lw=2.5, ls="--", label="mean over shifts")
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(x)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"clean {100 * result['clean_acc']:.1f} %, mean under shift {100 * result['mean_acc']:.1f} %",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_examples(image: torch.Tensor, path: str | Path, seed: int = 0) -> Path:
    """One uint8 S x S x 3 image under every shift at severities 0..5 (to judge what a severity looks like)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = image.permute(2, 0, 1).unsqueeze(0).float().div(255)
    fig, axes = plt.subplots(len(SHIFTS), 6, figsize=(6 * 1.2, len(SHIFTS) * 1.25), squeeze=False)
    for r, (name, shift) in enumerate(SHIFTS.items()):
        for sev in range(6):
            ax = axes[r][sev]
            ax.imshow(shift(x, sev, shift_generator(seed, name, sev, 0))[0].permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if sev == 0:
                ax.set_ylabel(name, fontsize=7)
            if r == 0:
                ax.set_title("clean" if sev == 0 else f"severity {sev}", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
