#!/usr/bin/env python3
"""Make a real "own lab" folder from the PBC crops in ../shared/data, and a shifted "second lab" held out from it.

    python scripts/make_lab_folder.py --out outputs/lab [--per-class N] [--second-lab-per-class 100]

Writes, in torchvision's ImageFolder layout (``data=folder data.path=<out>/pbc``):

- ``<out>/pbc/<class>/<stem>.jpg``: the 200 x 200 PBC crops themselves (the JPEG bytes from the pack, unchanged, so
  reading them at 64 px gives exactly what bloodmnist_64.npz holds), all but the held-out images of each class, or
  the first ``--per-class`` of them;
- ``<out>/second_lab/<class>/<stem>.png``: ``--second-lab-per-class`` other images of each class (never in pbc/;
  from BloodMNIST's test split, so a model trained on BloodMNIST has not seen them),
  shifted as another lab's smears would be: the shift suite's stain and colour shifts (``--shifts``; default the
  stain's hue and strength and the lamp's brightness) at ``--severity`` 3, one after the other, on every image,
  saved losslessly.

Which image goes where is drawn per class with ``--seed``. Never commit what this writes (outputs/ is ignored).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bloodcls.common.tensors import to_float_images  # noqa: E402
from bloodcls.robustness.shifts import SHIFTS  # noqa: E402

PACK = REPO.parent / "shared" / "data"
STAIN_AND_COLOUR = ("hue", "saturation_up", "brightness_down")


def read_pack(pack: Path) -> tuple[dict[str, bytes], dict[str, list[str]], dict[str, str]]:
    """(stem -> JPEG bytes of every crop, class folder -> its stems in the pack's list order, stem -> its
    BloodMNIST split)."""
    crops: dict[str, bytes] = {}
    for part in sorted(pack.glob("pbc200.part*.tar")):
        with tarfile.open(part) as tar:
            for member in tar.getmembers():
                crops[Path(member.name).stem] = tar.extractfile(member).read()
    classes: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    with open(pack / "bloodmnist_split.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            classes.setdefault(row["class_dir"], []).append(row["stem"])
            splits[row["stem"]] = row["split"]
    return crops, classes, splits


def shift_image(jpeg: bytes, shifts: list[str], severity: int, generator: torch.Generator) -> Image.Image:
    """One crop under the chosen shifts in turn, as 8-bit RGB."""
    rgb = np.array(Image.open(io.BytesIO(jpeg)).convert("RGB"))  # writable: torch shares its memory
    x = to_float_images(torch.from_numpy(rgb)[None])
    for name in shifts:
        x = SHIFTS[name](x, severity, generator)
    return Image.fromarray(x[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "lab")
    ap.add_argument("--pack", type=Path, default=PACK, help="folder with pbc200.part*.tar and bloodmnist_split.csv")
    ap.add_argument("--per-class", type=int, default=None, help="images of each class in pbc/ (default: all left)")
    ap.add_argument("--second-lab-per-class", type=int, default=100)
    ap.add_argument("--shifts", default=",".join(STAIN_AND_COLOUR), help=f"from: {', '.join(SHIFTS)}")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out-from", default="test", choices=("test", "any"),
                    help="draw second_lab/ from BloodMNIST's test split only (default), so that a model trained on "
                         "BloodMNIST has never seen those cells, or from any split")
    args = ap.parse_args(argv)
    shifts = args.shifts.split(",")
    if unknown := [s for s in shifts if s not in SHIFTS]:
        raise SystemExit(f"unknown shifts {unknown}; known: {', '.join(SHIFTS)}")
    crops, classes, splits = read_pack(args.pack)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    counts = {}
    for name, stems in sorted(classes.items()):
        order = [stems[i] for i in rng.permutation(len(stems))]
        pool = [s for s in order if args.held_out_from == "any" or splits[s] == args.held_out_from]
        held = pool[: args.second_lab_per_class]
        taken = set(held)
        kept = [s for s in order if s not in taken][: args.per_class]
        (args.out / "pbc" / name).mkdir(parents=True, exist_ok=True)
        (args.out / "second_lab" / name).mkdir(parents=True, exist_ok=True)
        for stem in kept:
            (args.out / "pbc" / name / f"{stem}.jpg").write_bytes(crops[stem])
        for stem in held:
            shift_image(crops[stem], shifts, args.severity, generator).save(args.out / "second_lab" / name / f"{stem}.png")
        counts[name] = (len(kept), len(held))
    for name, (kept, held) in counts.items():
        print(f"{name:14s} pbc {kept:5d}  second_lab {held:4d}")
    (args.out / "classes.yaml").write_text("# the PBC folder names that are not BloodMNIST's class names (--classes)\n"
                                          "ig: immature_granulocytes\n")
    print(f"-> {args.out / 'pbc'} and {args.out / 'second_lab'} ({', '.join(shifts)} at severity {args.severity})")


if __name__ == "__main__":
    main()
