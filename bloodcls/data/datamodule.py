"""In-memory splits as a LightningDataModule: fast batch loaders and batched augmentation over uint8 arrays.

A whole split fits in memory as uint8 (BloodMNIST's 128 px train is 0.59 GB), so batches are index slices of
one tensor: on the GPU when training there (``on_device``), which removes worker processes and host-to-device
copies from the hot path. Conversion to float and augmentation run batched after the transfer.
:class:`ArrayDataModule` is all of that; a subclass says where the arrays come from:
:class:`BloodMNISTDataModule` the MedMNIST file, :class:`bloodcls.data.folder_datamodule.FolderDataModule` a
folder of a lab's own images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from bloodcls.common.tensors import to_float_images
from bloodcls.data.augmentation import GeometricAugment, PhotometricAugment, per_sample_transforms
from bloodcls.data.files import (
    CLASS_NAMES,
    NUM_CLASSES,
    _check_size,
    class_weights,
    default_root,
    ensure_file,
    load_cached,
)
from bloodcls.data.loaders import ArrayDataset, ShardSampler, TensorBatches
from bloodcls.errors import DataError
from bloodcls.schema import check_value

log = logging.getLogger(__name__)

def _photometric(augment: bool | str, strengths: dict | None, img_size: int) -> PhotometricAugment | None:
    """``augment=robust``: the study's geometric augmentation plus :class:`PhotometricAugment`."""
    if augment != "robust":
        return None
    try:
        return PhotometricAugment(img_size=img_size, **dict(strengths or {}))
    except TypeError as err:
        raise DataError(f"data.photometric has an unknown strength ({err}); see bloodcls.data.augmentation."
                        "PhotometricAugment for the names.") from None
    except ValueError as err:
        raise DataError(f"data.photometric: {err}. Set data.photometric.share between 0 and 1 and "
                        "data.photometric.ramp_epochs to 0 or more.") from None


class ArrayDataModule(L.LightningDataModule):
    """Train/val/test arrays (N x S x S x 3 uint8 images, int64 labels) with class weights and batched,
    training-only augmentation; a subclass supplies :meth:`load_arrays`, ``class_names`` and ``num_classes``.

    ``loader="tensor"`` (default) serves batches from in-memory tensors, moved to the GPU once when
    ``on_device`` allows; ``loader="torch"`` is a standard DataLoader with per-sample torchvision
    transforms in ``num_workers`` workers, kept as the reference path. ``run_dir`` is the run's folder, where a
    data source keeps what it draws for the run (a folder's split); None outside a run.
    """

    class_names: list[str]
    num_classes: int

    def __init__(
        self,
        img_size: int = 128,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        augment: bool | str = True,
        loader: str = "tensor",
        on_device: str | bool = "auto",
        num_workers: int = 0,
        channels_last: bool | str = False,
        seed: int = 0,
        photometric: dict | None = None,
        min_augment: str = "none",
        run_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        # the allowed values and the message are check_config's (bloodcls.schema): this class is built without Hydra too
        for key, value in (("augment", augment), ("min_augment", min_augment), ("loader", loader),
                           ("on_device", on_device), ("channels_last", channels_last)):
            check_value(f"data.{key}", value, DataError)
        if min_augment == "geometric" and augment is False:
            augment = True  # a recipe that always augments (recipe=strong) keeps augment=robust as it is
        _check_size(img_size)
        self.img_size, self.batch_size, self.eval_batch_size = img_size, batch_size, eval_batch_size
        self.photometric = _photometric(augment, photometric, img_size)
        self.augment, self.loader = bool(augment), loader
        self.on_device, self.num_workers = str(on_device).lower(), num_workers
        # auto is resolved by train() (bloodcls.training.compute); a data module built on its own stays NCHW.
        self.channels_last, self.seed = channels_last is True, seed
        self.run_dir = Path(run_dir) if run_dir else None
        self.augmenter = GeometricAugment()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.path: Path | None = None
        self.md5: str | None = None
        self.class_weights: torch.Tensor | None = None

    # -- loading ---------------------------------------------------------------------------
    def load_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The three splits as (images, labels) arrays; sets ``path`` (and ``md5`` where there is one file)."""
        raise NotImplementedError

    def train_class_weights(self) -> torch.Tensor:
        """Balanced class weights of the training split (the study's loss), before or after ``setup``."""
        if self.class_weights is not None:
            return self.class_weights
        return class_weights(torch.from_numpy(self.load_arrays()["train"][1]), self.num_classes)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = self.load_arrays()
        self.splits = {s: (torch.from_numpy(x), torch.from_numpy(y)) for s, (x, y) in arrays.items()}
        self.class_weights = class_weights(self.splits["train"][1], self.num_classes)
        device = self._target_device()
        if device is not None and device.type != "cpu":
            self.splits = {s: (x.to(device), y.to(device)) for s, (x, y) in self.splits.items()}

    def record(self) -> dict[str, Any]:
        """What results.json keeps about the data a run used."""
        return {"path": str(self.path), "md5": self.md5, "split_sizes": self.split_sizes(),
                "class_names": list(self.class_names)}

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
            x = self.photometric(x, epoch=getattr(self.trainer, "current_epoch", None))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        train = self.trainer is not None and self.trainer.training
        return self.prepare_batch(x, train), y.long()


class BloodMNISTDataModule(ArrayDataModule):
    """BloodMNIST at 28/64/128/224 px from the MedMNIST(+) file under ``root`` (downloaded when allowed)."""

    def __init__(self, root: str | None = None, download: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = str(Path(root).expanduser()) if root else default_root()
        self.download = download
        self.class_names = list(CLASS_NAMES)
        self.num_classes = NUM_CLASSES

    def prepare_data(self) -> None:
        ensure_file(self.root, self.img_size, self.download)

    def load_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The file is read and hashed once per process (``load_cached``)."""
        self.path = ensure_file(self.root, self.img_size, self.download)
        self.md5, arrays = load_cached(self.path, self.img_size)
        return arrays
