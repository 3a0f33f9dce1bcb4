"""The trust figure: the reliability diagram before and after temperature scaling, and beside it the
risk-coverage curve (the error rate among the accepted images as fewer are accepted), so a reader can
pick an operating point rather than read only the curve's area."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def reliability_diagram(report: dict[str, Any], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report.get("selective", {}).get("curve")  # absent in reports written before it was stored
    fig, axes = plt.subplots(1, 3 if curve else 2, figsize=(12 if curve else 8, 4))
    for ax, when in zip(axes, ("before", "after"), strict=False):
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
    if curve:
        sel, ax = report["selective"], axes[2]
        ax.plot([100 * c for c in curve["coverage"]], [100 * r for r in curve["risk"]], "b-", lw=1.5)
        ax.axvline(100 * sel["coverage"], color="r", ls="--", lw=1,
                   label=f"review threshold: {100 * sel['coverage']:.1f} % kept")
        ax.set(title=f"risk-coverage (AURC {100 * sel['aurc']:.2f} %)", xlabel="coverage: images accepted (%)",
               ylabel="error rate among them (%)", xlim=(0, 100), ylim=(0, None))
        ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
