"""Batch loaders over in-memory splits: index slices of one tensor (the fast path), a Dataset for the
classic DataLoader path, and the rank-sharding sampler both use under DDP."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


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
