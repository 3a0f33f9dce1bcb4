"""The reliability diagram: accuracy against confidence per bin, before and after temperature scaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def reliability_diagram(report: dict[str, Any], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, when in zip(axes, ("before", "after"), strict=True):
        bins = [b for b in report["reliability"][when] if b["count"]]
        mids = [(b["lo"] + b["hi"]) / 2 for b in bins]
        ax.bar(mids, [b["accuracy"] for b in bins], width=1 / len(report["reliability"][when]), edgecolor="k",
               alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.plot(mids, [b["confidence"] for b in bins], "r.", label="mean confidence")
        ece = report["calibration"][when]["ece"]
        label = "before" if when == "before" else f"after (T = {report['temperature']:.2f})"
        ax.set(title=f"{label}: ECE {100 * ece:.2f} %", xlabel="confidence", xlim=(0, 1), ylim=(0, 1))
    axes[0].set_ylabel("accuracy (test split)")
    axes[0].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
