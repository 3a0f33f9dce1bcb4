"""Shared fixtures: synthetic data roots in the official layout and composed Hydra configs."""

from __future__ import annotations

import importlib.util
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import write_synthetic_npz

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
# What the real-data tests read: the builder, the split list and the three tar parts of source crops.
SHARED_FILES = ("make_bloodmnist.py", "bloodmnist_split.csv", *(f"pbc200.part{i}.tar" for i in (1, 2, 3)))


def shared_data_missing(folder: Path = SHARED_DATA) -> list[str]:
    """The files of SHARED_FILES that ``folder`` lacks (empty: the real-data tests can run)."""
    return [name for name in SHARED_FILES if not (folder / name).is_file()]


# Skip a real-data test on what it reads, not only on the builder script.
needs_shared_data = pytest.mark.skipif(bool(shared_data_missing()),
                                       reason=f"../shared/data lacks {', '.join(shared_data_missing()) or 'nothing'}")

# Tests never talk to the W&B servers and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")
# Under pytest-xdist (make test runs one worker per core) every worker and the runs it starts train on one thread
# (threads=auto follows OMP_NUM_THREADS): two-thread runs in two workers would fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """28 and 64 px learnable synthetic BloodMNIST files (24/6/10 images per class)."""
    root = tmp_path_factory.mktemp("bloodmnist")
    write_synthetic_npz(root, 28)
    write_synthetic_npz(root, 64)
    return root


# Overrides that make a synthetic run learn in a few CPU seconds.
FAST = [
    "data.batch_size=16",
    "model.optimizer.lr=3e-3",
    "model.bn_momentum=0.5",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
]


# Tracker loggers for the shared sweep when the [trackers] extra is installed (make venv installs it).
SWEEP_TRACKERS = ("[csv,tensorboard,mlflow]" if all(importlib.util.find_spec(m) for m in ("tensorboard", "mlflow"))
                  else "csv")


@pytest.fixture(scope="session")
def tiny_sweep(synthetic_root, tmp_path_factory):
    """(process, sweep folder) of one real two-experiment, two-seed sweep, shared by the report tests and the
    tracker tests so that the suite pays for one sweep (their modules share the xdist group ``tiny_sweep``, so one
    worker runs it); tests may add to its report but not change its runs."""
    from tests.helpers import run_cli

    out = tmp_path_factory.mktemp("sweeps")
    proc = run_cli("sweep.py", "experiments=[baseline_64,inception]", "seeds=[0,1]", "trainer.max_epochs=1",
                   f"data.root={synthetic_root}", "data.img_size=28", f"logger={SWEEP_TRACKERS}",
                   f"paths.log_dir={out}", "name=tiny", *FAST)
    return proc, out / "sweeps" / "tiny"


# A deterministic CPU run that exercises every piece of restorable state: augmentation and dropout
# (reseeded per epoch), shuffling, Adam, EarlyStopping, and a plateau scheduler that halves the LR
# after every epoch (threshold 10: no epoch counts as an improvement), so a lost scheduler step shows.
DETERMINISTIC_RUN = ["model=unet", "data.img_size=28", "data.augment=true", "trainer.max_epochs=2", "logger=csv",
                     "trainer.deterministic=true", "model.scheduler.patience=0", "model.scheduler.threshold=10",
                     "model.scheduler.threshold_mode=rel", *FAST]


@pytest.fixture(scope="session")
def reference_run(synthetic_root, tmp_path_factory):
    """(run folder, results) of one uninterrupted DETERMINISTIC_RUN; tests must not write into its folder."""
    from bloodcls.training import train
    from tests.helpers import compose_train

    out = tmp_path_factory.mktemp("reference")
    cfg = compose_train([*DETERMINISTIC_RUN, f"data.root={synthetic_root}"], output_dir=out)
    return out, train(cfg, output_dir=out)


@pytest.fixture(scope="session")
def trained_checkpoint(reference_run) -> Path:
    """best.ckpt of the reference run: a 2-epoch U-Net at 28 px (predict, export and checkpoint tests)."""
    return reference_run[0] / "checkpoints" / "best.ckpt"


def png_bomb(path, side=100_000):
    """A valid PNG header claiming side x side pixels (10 gigapixels) with almost no data: a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """User image files: good ones in odd modes and shapes, and every kind of bad one."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (50, 80, 4), dtype=np.uint8)
    rgba[:, :, 3] = 255
    rgba[:, :15, 3] = 0  # left margin fully transparent (cropped away anyway)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(d / "grey.jpg")
    wide = np.zeros((30, 90, 3), dtype=np.uint8)
    wide[:, :30] = (255, 0, 0)
    wide[:, 30:60] = (0, 255, 0)
    wide[:, 60:] = (0, 0, 255)
    Image.fromarray(wide).save(d / "wide.tiff")
    Image.fromarray(wide).convert("P").save(d / "palette.bmp")
    data = (d / "rgba.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("not an image\n")
    png_bomb(d / "bomb.png")
    return d
