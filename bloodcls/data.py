"""BloodMNIST as a LightningDataModule: file checks, in-memory splits and fast batch loaders.

The files are the MedMNIST(+) release (``bloodmnist.npz`` for 28 px, ``bloodmnist_{64,128,224}.npz``)
found through the ``medmnist`` package's names, URLs and default root. A whole split fits in memory
as uint8 (128 px train is 0.59 GB), so batches are index slices of one tensor: on the GPU when
training there (``on_device``), which removes worker processes and host-to-device copies from the
hot path. Conversion to float and augmentation run batched after the transfer.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from medmnist.info import DEFAULT_ROOT, HOMEPAGE, INFO
from torch.utils.data import DataLoader, Dataset, Sampler

from bloodcls.augmentation import GeometricAugment, PhotometricAugment, per_sample_transforms
from bloodcls.errors import DataError
from bloodcls.images import to_float_images

log = logging.getLogger(__name__)

FLAG = "bloodmnist"
SIZES = (28, 64, 128, 224)
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


class ShardSampler(Sampler[int]):
    """This rank's sample order for an epoch: a permutation drawn from ``seed`` and the epoch number
    (or the plain order), then every ``world_size``-th sample from ``rank``.

    Drawing from (seed, epoch) makes a resumed run see the same order as an uninterrupted one.
    Under DDP, training shards are cut to equal length (every rank must run the same number of
    steps); evaluation shards are not padded, so no sample is counted twice (Lightning's own
    DistributedSampler pads with duplicates, hence ``use_distributed_sampler: false``).
    """

    def __init__(self, n: int, shuffle: bool = False, seed: int = 0, epoch_fn: Callable[[], int] | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.epoch_fn = epoch_fn or (lambda: 0)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n
        if self.shuffle:
            return self.n // self.world_size
        return len(range(self.rank, self.n, self.world_size))

    @property
    def contiguous(self) -> bool:
        return not self.shuffle and self.world_size == 1

    def order(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(self.epoch_fn()))
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return order[self.rank :: self.world_size][: len(self)]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())


class TensorBatches:
    """Batches as index slices of in-memory tensors (images N x S x S x 3 uint8), no worker processes.

    The order comes from a :class:`ShardSampler`; the gather runs on the tensors' device.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        epoch_fn: Callable[[], int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.drop_last = batch_size, drop_last
        self.shard = ShardSampler(len(labels), shuffle, seed, epoch_fn, rank, world_size)

    def __len__(self) -> int:
        m = len(self.shard)
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = None if self.shard.contiguous else self.shard.order().to(self.images.device)
        for b in range(len(self)):
            lo, hi = b * self.batch_size, (b + 1) * self.batch_size
            if order is None:
                yield self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                yield self.images[idx], self.labels[idx]


class ArrayDataset(Dataset):
    """Per-sample dataset over N x S x S x 3 uint8 arrays (the classic DataLoader path)."""

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, transform=None) -> None:
        self.images = torch.as_tensor(images)
        self.labels = torch.as_tensor(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i].permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[i]


def _photometric(augment: bool | str, strengths: dict | None, img_size: int) -> PhotometricAugment | None:
    """``augment=robust``: the study's geometric augmentation plus :class:`PhotometricAugment`."""
    if isinstance(augment, str) and augment != "robust":
        raise DataError(f"data.augment must be true, false or robust, got {augment!r}.")
    if augment != "robust":
        return None
    try:
        return PhotometricAugment(img_size=img_size, **dict(strengths or {}))
    except TypeError as err:
        raise DataError(f"data.photometric has an unknown strength ({err}); see bloodcls.augmentation."
                        "PhotometricAugment for the names.") from None


class BloodMNISTDataModule(L.LightningDataModule):
    """BloodMNIST at 28/64/128/224 px with class weights and batched, training-only augmentation.

    ``loader="tensor"`` (default) serves batches from in-memory tensors, moved to the GPU once when
    ``on_device`` allows; ``loader="torch"`` is a standard DataLoader with per-sample torchvision
    transforms in ``num_workers`` workers, kept as the reference path.
    """

    def __init__(
        self,
        root: str | None = None,
        img_size: int = 128,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        augment: bool | str = True,
        download: bool = True,
        loader: str = "tensor",
        on_device: str | bool = "auto",
        num_workers: int = 0,
        channels_last: bool = False,
        seed: int = 0,
        photometric: dict | None = None,
        min_augment: str = "none",
    ) -> None:
        super().__init__()
        if min_augment not in ("none", "geometric"):
            raise DataError(f"data.min_augment must be none or geometric, got {min_augment!r}.")
        if min_augment == "geometric" and augment is False:
            augment = True  # a recipe that always augments (recipe=strong) keeps augment=robust as it is
        if loader not in ("tensor", "torch"):
            raise DataError(f"data.loader must be 'tensor' or 'torch', got {loader!r}.")
        if str(on_device).lower() not in ("auto", "true", "false"):
            raise DataError(f"data.on_device must be auto, true or false, got {on_device!r}.")
        _check_size(img_size)
        self.root = str(Path(root).expanduser()) if root else default_root()
        self.img_size, self.batch_size, self.eval_batch_size = img_size, batch_size, eval_batch_size
        self.photometric = _photometric(augment, photometric, img_size)
        self.augment, self.download, self.loader = bool(augment), download, loader
        self.on_device, self.num_workers = str(on_device).lower(), num_workers
        self.channels_last, self.seed = channels_last, seed
        self.class_names = list(CLASS_NAMES)
        self.num_classes = NUM_CLASSES
        self.augmenter = GeometricAugment()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.path: Path | None = None
        self.md5: str | None = None
        self.class_weights: torch.Tensor | None = None

    # -- loading ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        ensure_file(self.root, self.img_size, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.path = ensure_file(self.root, self.img_size, self.download)
        self.md5, arrays = load_cached(self.path, self.img_size)
        self.splits = {s: (torch.from_numpy(x), torch.from_numpy(y)) for s, (x, y) in arrays.items()}
        self.class_weights = class_weights(self.splits["train"][1], self.num_classes)
        device = self._target_device()
        if device is not None and device.type != "cpu":
            self.splits = {s: (x.to(device), y.to(device)) for s, (x, y) in self.splits.items()}

    def _target_device(self) -> torch.device | None:
        if self.loader != "tensor" or self.on_device == "false":
            return None
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        if self.on_device == "true" and (device is None or device.type == "cpu") and torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def split_sizes(self) -> dict[str, int]:
        return {s: len(y) for s, (_, y) in self.splits.items()}

    # -- loaders ---------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, split: str, train: bool):
        if not self.splits:
            self.setup()
        images, labels = self.splits[split]
        batch_size = self.batch_size if train else self.eval_batch_size
        rank, world = self._rank_world()
        if self.loader == "tensor":
            return TensorBatches(images, labels, batch_size, shuffle=train, seed=self.seed,
                                 epoch_fn=self._epoch, rank=rank, world_size=world)
        dataset = ArrayDataset(images.cpu(), labels.cpu(), per_sample_transforms(self.img_size, train and self.augment))
        sampler = ShardSampler(len(labels), shuffle=train, seed=self.seed, epoch_fn=self._epoch, rank=rank,
                               world_size=world)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)

    def predict_dataloader(self):
        return self._loader("test", train=False)

    # -- on-device batch preparation -------------------------------------------------------
    def prepare_batch(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 N x S x S x 3 (tensor path) or float N x 3 x S x S (DataLoader path) -> float [0, 1]."""
        if x.dtype == torch.uint8:
            x = to_float_images(x)  # NHWC storage: already channels_last
            if train and self.augment:
                x = self.augmenter(x)
        if train and self.photometric is not None:  # augment=robust: lab variability on top
            x = self.photometric(x)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        train = self.trainer is not None and self.trainer.training
        return self.prepare_batch(x, train), y.long()
