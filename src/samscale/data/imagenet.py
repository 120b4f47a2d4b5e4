"""ImageNet in the class-folder layout, streamed from disk: root/train/<wnid>/*.JPEG, root/val/<wnid>/*.JPEG.

The whole set does not fit in memory, so its splits are `ImageFolderSplit`s (file paths + labels) and batches are
decoded on the fly by `ImageFolderLoader`. Training images get an Inception-style random-resized crop (scale
0.08-1, aspect 3/4-4/3, as torchvision) to `image_size` and a horizontal flip with probability 1/2; evaluation
images are resized (shorter side `resize_size`) and center-cropped. Then pixels / 255, ImageNet mean/std.
Classes are the sorted folder names; the official validation set serves as the test split. Needs Pillow.
"""
from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from samscale.data.dataset import SourceDataset
from samscale.data.errors import DatasetUnavailable
from samscale.data.locate import Candidate, first_available, skipped
from samscale.data.options import positive_int
from samscale.data.paths import dataset_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10


def pillow() -> Any:
    """The PIL.Image module, or an ImportError saying how to install Pillow."""
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("loading image folders needs Pillow: pip install pillow") from error
    return Image


def scan_image_folder(directory: str | os.PathLike[str]) -> tuple[list[str], list[int], list[str]]:
    """(paths, labels, classes) of a class-folder tree; classes are the sorted subfolder names, files sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no folder {directory}")
    classes = sorted(entry.name for entry in directory.iterdir() if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"{directory} has no class subfolders (expected {directory}/<class>/<image>)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (directory / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    if not paths:
        raise FileNotFoundError(f"{directory}: no images with extensions {IMAGE_EXTENSIONS}")
    return paths, labels, classes


def crop_box(width: int, height: int, uniforms: Tensor) -> tuple[int, int, int, int]:
    """Random-resized-crop (left, top, crop width, crop height) from pre-drawn U(0, 1) numbers of shape (10, 4).

    Each attempt uses (area scale, log aspect ratio, top, left); if none fits, fall back to the largest central
    crop with the aspect ratio clamped to the allowed range (torchvision's rule).
    """
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for u_scale, u_ratio, u_top, u_left in uniforms.tolist():
        target = area * (CROP_SCALE[0] + u_scale * (CROP_SCALE[1] - CROP_SCALE[0]))
        ratio = math.exp(log_low + u_ratio * (log_high - log_low))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(u_left * (width - w + 1)), int(u_top * (height - h + 1)), w, h
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


@dataclass(frozen=True, eq=False)
class ImageFolderSplit:
    """A lazily loaded image split: file paths and int64 labels; `training` selects the augmenting transform."""

    paths: tuple[str, ...]
    y: Tensor
    classes: tuple[str, ...]
    training: bool = False
    image_size: int = 224
    resize_size: int = 256

    def __post_init__(self) -> None:
        if len(self.paths) != self.y.shape[0]:
            raise ValueError(f"{len(self.paths)} paths but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Tensor) -> ImageFolderSplit:
        """The images at `index`, in that order."""
        return replace(self, paths=tuple(self.paths[i] for i in index.tolist()), y=self.y[index])

    def relabel(self, y: Tensor) -> ImageFolderSplit:
        """The same images with labels `y`."""
        return replace(self, y=y)

    def as_eval(self) -> ImageFolderSplit:
        """The same images with the evaluation transform (resize + center crop)."""
        return replace(self, training=False)

    def load(self, i: int, uniforms: Tensor | None = None) -> Tensor:
        """Image `i` as a normalized float32 (3, S, S) tensor; `uniforms` (41,) drive the training transform."""
        Image = pillow()
        with Image.open(self.paths[i]) as opened:
            image = opened.convert("RGB")
        size = self.image_size
        if self.training:
            if uniforms is None:
                raise ValueError("a training split needs pre-drawn uniforms for its random crop and flip")
            left, top, w, h = crop_box(image.width, image.height, uniforms[:-1].view(CROP_ATTEMPTS, 4))
            image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
            if uniforms[-1] < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            scale = self.resize_size / min(image.width, image.height)
            image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                                 Image.Resampling.BILINEAR)
            left, top = (image.width - size) // 2, (image.height - size) // 2
            image = image.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return pixels.sub_(mean).div_(std)


class ImageFolderLoader:
    """Yields decoded (x, y) batches of an ImageFolderSplit; same protocol and length rule as TensorLoader.

    Feeding a GPU: `num_workers` threads decode images in parallel (Pillow releases the GIL while it decodes and
    resizes), the next `prefetch` batches are decoded while the current one trains, and with `pin_memory` each batch
    lands in pinned memory, so its copy to the GPU can be non-blocking. With `shard=(rank, world_size)` (one
    process of a data-parallel run) each batch's images outside `rank_slice(rank)` are not decoded: x holds only
    this process's slice of the batch, y the whole batch's labels.

    All randomness (order, crops, flips) is drawn from `generator` in the main thread, for the whole batch, so
    results depend neither on `num_workers` and `prefetch` nor, slice by slice, on `shard`.
    """

    def __init__(
        self,
        split: ImageFolderSplit,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        num_workers: int = 0,
        prefetch: int = 2,
        pin_memory: bool = False,
        shard: tuple[int, int] | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        for name, value in (("num_workers", num_workers), ("prefetch", prefetch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.pin_memory = pin_memory
        self.shard = shard

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _plan(self, generator: torch.Generator) -> Iterator[tuple[list[tuple[int, Tensor]], Tensor]]:
        """(decode jobs of this process, labels of the whole batch) per batch; all random draws happen here."""
        n = len(self.split)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            uniforms = torch.rand(len(index), 4 * CROP_ATTEMPTS + 1, generator=generator)
            jobs = list(zip(index.tolist(), uniforms))
            if self.shard is not None:
                size = -(-len(index) // self.shard[1])  # rank_slice of samscale.optim.sync
                jobs = jobs[self.shard[0] * size : (self.shard[0] + 1) * size]
            yield jobs, self.split.y[index]

    def _collate(self, images: list[Tensor]) -> Tensor:
        if not images:
            return torch.empty(0, 3, self.split.image_size, self.split.image_size)
        if not self.pin_memory:
            return torch.stack(images)
        out = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype).pin_memory()
        return torch.stack(images, out=out)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = self.generator or torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        plan = self._plan(generator)
        if self.num_workers == 0:
            for jobs, y in plan:
                yield self._collate([self.split.load(*job) for job in jobs]), y
            return
        pool = ThreadPoolExecutor(self.num_workers)
        pending: deque = deque()
        try:
            for jobs, y in plan:  # keep `prefetch` batches decoding ahead of the one handed out
                pending.append(([pool.submit(self.split.load, *job) for job in jobs], y))
                if len(pending) > self.prefetch:
                    futures, labels = pending.popleft()
                    yield self._collate([f.result() for f in futures]), labels
            while pending:
                futures, labels = pending.popleft()
                yield self._collate([f.result() for f in futures]), labels
        finally:
            for futures, _ in pending:
                for future in futures:
                    future.cancel()
            pool.shutdown(wait=True)


def build_imagenet(
    *, root: str | None, download: bool, augment: bool, image_size: int = 224, resize_size: int = 256
) -> SourceDataset:
    """ImageNet (or any class-folder tree) as lazily loaded splits; the official val folder is the test split."""
    image_size, resize_size = positive_int("image_size", image_size), positive_int("resize_size", resize_size)
    directory = dataset_dir("imagenet", root)

    def scan() -> tuple[tuple, tuple]:
        return scan_image_folder(directory / "train"), scan_image_folder(directory / "val")

    candidates = [
        Candidate(f"class folders {directory}/train/<class>/*.JPEG and {directory}/val/<class>/*.JPEG", scan),
        Candidate("download", skipped("not possible: ImageNet is distributed only to registered users")),
    ]
    fixes = [
        f"arrange ImageNet as {directory}/train/<wnid>/*.JPEG and {directory}/val/<wnid>/*.JPEG (validation images "
        "sorted into class folders) and pass root=DIR or set $SAMSCALE_DATA",
    ]
    (train, test), where = first_available("imagenet", candidates, fixes)
    if train[2] != test[2]:
        raise DatasetUnavailable(f"{directory}: train has {len(train[2])} classes but val has {len(test[2])}; "
                                 "both must hold the same class folders")
    pillow()

    def split(scanned: tuple, training: bool) -> ImageFolderSplit:
        paths, labels, classes = scanned
        return ImageFolderSplit(tuple(paths), torch.tensor(labels, dtype=torch.int64), tuple(classes), training,
                                image_size, resize_size)

    num_classes = len(train[2])
    return SourceDataset(
        train=split(train, training=augment),
        test=split(test, training=False),
        task="classification",
        num_classes=num_classes,
        output_dim=num_classes,
        input_shape=(3, image_size, image_size),
        source=where,
    )
