"""A CPU-budget stand-in for CIFAR-10: Fashion-MNIST (or MNIST) shaped like CIFAR-10 batches.

Each 28x28 image is zero-padded to 32x32 in raw pixel space and replicated to 3 channels, then normalized with the
mean and std of its own official training set (over all padded pixels), and trained with the same pad-4 / crop /
flip augmentation as CIFAR-10. The 3 channels share memory (an expanded view) until a batch is gathered.
`root`, when given, is the directory of the base dataset.
"""
from __future__ import annotations

import numpy as np
import torch

from samscale.data.augment import PadCropFlip
from samscale.data.cifar10 import normalize
from samscale.data.dataset import SourceDataset
from samscale.data.errors import DatasetUnavailable
from samscale.data.fashion_mnist import load_fashion_mnist_arrays
from samscale.data.idx import ImageArrays
from samscale.data.mnist import load_mnist_arrays
from samscale.data.options import one_of
from samscale.data.split import Split

BASES = ("auto", "fashion-mnist", "mnist")
_LOADERS = {"fashion-mnist": load_fashion_mnist_arrays, "mnist": load_mnist_arrays}


def _load_base(base: str, root: str | None, download: bool) -> tuple[ImageArrays, str, str]:
    if base != "auto":
        return (*_LOADERS[base](root, download), base)
    try:
        return (*load_fashion_mnist_arrays(root, download), "fashion-mnist")
    except DatasetUnavailable as fashion_error:
        try:
            return (*load_mnist_arrays(root, download), "mnist")
        except DatasetUnavailable as mnist_error:
            message = f"cifar10-standin needs Fashion-MNIST or MNIST.\n{fashion_error}\n{mnist_error}"
            raise DatasetUnavailable(message) from None


def pixel_mean_std(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) std of all pixels / 255 of uint8 images, from a histogram (no float copy of the images)."""
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum()
    mean = (counts * values).sum() / n
    variance = (counts * (values - mean) ** 2).sum() / (n - 1)
    return torch.tensor([mean], dtype=torch.float32), torch.tensor([np.sqrt(variance)], dtype=torch.float32)


def build_cifar10_standin(*, root: str | None, download: bool, augment: bool, base: str = "auto") -> SourceDataset:
    """Fashion-MNIST (`base="auto"` falls back to MNIST) as normalized 3x32x32 images; `substitute_for="cifar10"`."""
    one_of("base", base, BASES)
    arrays, where, used = _load_base(base, root, download)
    pad = ((0, 0), (2, 2), (2, 2))
    train_images = np.pad(arrays.train_images, pad)[:, None]
    test_images = np.pad(arrays.test_images, pad)[:, None]
    mean, std = pixel_mean_std(train_images)
    train_x = normalize(train_images, mean, std).expand(-1, 3, -1, -1)
    test_x = normalize(test_images, mean, std).expand(-1, 3, -1, -1)
    name = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}[used]
    source = (f"stand-in for CIFAR-10: {name} ({where}), zero-padded to 32x32, replicated to 3 channels, "
              f"normalized with its train mean {mean.item():.4f} and std {std.item():.4f}")
    return SourceDataset(
        train=Split(train_x, torch.from_numpy(arrays.train_labels)),
        test=Split(test_x, torch.from_numpy(arrays.test_labels)),
        task="classification",
        num_classes=10,
        output_dim=10,
        input_shape=(3, 32, 32),
        source=source,
        substitute_for="cifar10",
        train_augment=PadCropFlip(pad=4, fill=(-mean / std).expand(3)) if augment else None,
    )
