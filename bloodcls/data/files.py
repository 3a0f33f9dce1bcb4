"""BloodMNIST files: names, MD5s and download through the ``medmnist`` package, layout checks, the
per-process cache, and the class weights of the study's loss.

The files are the MedMNIST(+) release (``bloodmnist.npz`` for 28 px, ``bloodmnist_{64,128,224}.npz``)
found through the ``medmnist`` package's names, URLs and default root.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from medmnist.info import DEFAULT_ROOT, HOMEPAGE, INFO

from bloodcls.errors import DataError
from bloodcls.schema import SIZES

log = logging.getLogger(__name__)

FLAG = "bloodmnist"
SPLITS = ("train", "val", "test")
NUM_CLASSES = 8
# Index order of the dataset itself (MedMNIST INFO), in key-friendly form for metric names.
CLASS_NAMES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature_granulocytes",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
_warned_md5: set[str] = set()
# One loaded file per process (keyed by path, size and mtime): the jobs of a multirun that share a
# worker process then read and hash a 0.8 GB file once instead of once per job.
_loaded: dict[tuple[str, int, int], tuple[str, dict]] = {}


def file_name(size: int) -> str:
    return f"{FLAG}.npz" if size == 28 else f"{FLAG}_{size}.npz"


def _info_suffix(size: int) -> str:
    return "" if size == 28 else f"_{size}"


def official_url(size: int) -> str:
    return INFO[FLAG][f"url{_info_suffix(size)}"]


def official_md5(size: int) -> str:
    return INFO[FLAG][f"MD5{_info_suffix(size)}"]


def default_root() -> str:
    return DEFAULT_ROOT


def md5sum(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _check_size(size: int) -> None:
    if size not in SIZES:
        raise DataError(f"BloodMNIST has no {size} px release; data.img_size must be one of {SIZES}.")


def ensure_file(root: str | Path, size: int, download: bool = True) -> Path:
    """Return the path of the size's file under ``root``, downloading it if allowed and possible."""
    _check_size(size)
    root = Path(root).expanduser()
    path = root / file_name(size)
    if path.is_file():
        return path
    reason = "downloads are off (data.download=false)"
    if download:
        try:
            root.mkdir(parents=True, exist_ok=True)
            from medmnist.dataset import BloodMNIST

            BloodMNIST(split="test", root=str(root), size=size, download=True)
            if path.is_file():
                return path
            reason = "the download finished without leaving the file"
        except Exception as err:  # network down, Zenodo unreachable, disk full, ...
            reason = f"the download failed ({type(err).__name__}; no network?)"
    raise DataError(
        f"BloodMNIST file {path.name} not found in data root {root}, and {reason}. "
        f"Download it from {official_url(size)} (MedMNIST, {HOMEPAGE}; MD5 {official_md5(size)}) and "
        f"put it at {path}, or point data.root=<folder> at a folder that holds it. Without internet, "
        "build files in the same layout from the PBC source images with "
        f"`python ../shared/data/make_bloodmnist.py --root {root} --sizes {size}`."
    )


def check_md5(path: Path, size: int) -> str:
    """Return the file's MD5; warn once if it is not the official release's (e.g. built from source)."""
    digest = md5sum(path)
    if digest != official_md5(size) and str(path) not in _warned_md5:
        _warned_md5.add(str(path))
        log.warning(
            "%s has MD5 %s, not the official %s: using it anyway (a file built from source images, or "
            "a different release). Results may not be comparable with published BloodMNIST numbers.",
            path, digest, official_md5(size),
        )
    return digest


def load_npz(path: str | Path, size: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load and validate the three splits; any problem is a :class:`DataError` naming the file."""
    path = Path(path)
    fix = "Delete it and download it again, or rebuild it with ../shared/data/make_bloodmnist.py."
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            wanted = {f"{s}_{k}" for s in SPLITS for k in ("images", "labels")}
            if missing := sorted(wanted - keys):
                raise DataError(f"{path} is not a MedMNIST file: keys {missing} are missing (found {sorted(keys)}). {fix}")
            arrays = {k: npz[k] for k in sorted(wanted)}
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as err:
        raise DataError(f"{path} is truncated or corrupt and cannot be read ({type(err).__name__}: {err}). {fix}") from None

    splits = {}
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = f"{path}: {split}_images"
        if images.dtype != np.uint8:
            raise DataError(f"{where} has dtype {images.dtype}; MedMNIST images are uint8. {fix}")
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise DataError(f"{where} has shape {images.shape}; expected N x S x S x 3 (RGB). {fix}")
        if size is not None and images.shape[1] != size:
            raise DataError(f"{where} holds {images.shape[1]} px images but {size} px were asked for. {fix}")
        if len(images) == 0:
            raise DataError(f"{path}: the {split} split is empty. {fix}")
        labels = labels.reshape(-1)
        if len(labels) != len(images):
            raise DataError(f"{path}: {split} has {len(images)} images but {len(labels)} labels. {fix}")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
            raise DataError(
                f"{path}: {split}_labels must be integers in 0..{NUM_CLASSES - 1}, found "
                f"{labels.dtype} in [{labels.min()}, {labels.max()}]. {fix}"
            )
        splits[split] = (images, labels.astype(np.int64))
    return splits


def load_cached(path: Path, size: int) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """MD5 and validated arrays of ``path``, reusing the last file this process loaded if unchanged."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = (check_md5(path, size), load_npz(path, size))
    return _loaded[key]


def class_weights(labels: np.ndarray | torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Balanced weights ``n / (num_classes * count_c)`` (scikit-learn's 'balanced'); absent classes get 0."""
    labels = torch.as_tensor(labels).reshape(-1)
    counts = torch.bincount(labels, minlength=num_classes).double()
    weights = torch.where(counts > 0, labels.numel() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()
