"""In-memory mini-batching: index slices of a (shuffled) permutation, no per-example collation."""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor

from samscale.data.dataset import Augmentation
from samscale.data.imagenet import ImageFolderLoader, ImageFolderSplit
from samscale.data.split import Split


class TensorLoader:
    """Yields (x, y) batches of a Split; `len` is ceil(N / B), or floor(N / B) with `drop_last`.

    With `shuffle`, each epoch draws a fresh permutation from `generator` (or, if None, from a generator seeded by
    the global torch RNG at the start of the epoch). `augment(x, generator)` is applied to every input batch.
    Batches are drawn on the CPU generator and gathered on the split's device.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        augment: Augmentation | None = None,
        drop_last: bool = False,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if drop_last and len(split) < batch_size:
            raise ValueError(f"drop_last with batch_size={batch_size} > {len(split)} examples leaves no batch")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.augment = augment
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = self.generator
        if generator is None and (self.shuffle or self.augment is not None):
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        x, y = self.split.x, self.split.y
        order = None
        if self.shuffle:
            order = torch.randperm(len(self.split), generator=generator, device=generator.device).to(x.device)
        for batch in range(len(self)):
            start = batch * self.batch_size
            stop = start + self.batch_size
            if order is None:
                xb, yb = x[start:stop], y[start:stop]
            else:
                index = order[start:stop]
                xb, yb = x[index], y[index]
            if self.augment is not None:
                xb = self.augment(xb, generator)
            yield xb, yb


def make_loader(
    split: Split | ImageFolderSplit,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: Augmentation | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    shard: tuple[int, int] | None = None,
) -> TensorLoader | ImageFolderLoader:
    """A batch iterator for any split: TensorLoader for in-memory splits, ImageFolderLoader for image folders.

    Image-folder splits carry their own (per-image) augmentation, selected by `split.training`; `augment` must
    then be None. `num_workers` (decoding threads), `pin_memory` and `shard` (decode only one process's slice of
    each batch) concern image folders only; in-memory splits already sit on the device.
    """
    if isinstance(split, ImageFolderSplit):
        if augment is not None:
            raise ValueError("image-folder splits augment per image (split.training); pass augment=None")
        return ImageFolderLoader(split, batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
                                 num_workers=num_workers, pin_memory=pin_memory, shard=shard)
    return TensorLoader(split, batch_size, shuffle=shuffle, generator=generator, augment=augment, drop_last=drop_last)
