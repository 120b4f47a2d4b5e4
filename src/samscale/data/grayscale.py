"""uint8 grayscale images (N, H, W) as the splits the MNIST-style sources share: float32 (N, 1, H, W) in [0, 1]."""
from __future__ import annotations

import numpy as np
import torch

from samscale.data.dataset import SourceDataset
from samscale.data.idx import ImageArrays
from samscale.data.split import Split


def unit_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """Pixels / 255 as float32 with a channel axis, labels as int64; no normalization (the paper's MNIST setting)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def grayscale_source(arrays: ImageArrays, source: str, num_classes: int = 10) -> SourceDataset:
    """A 10-class image classification source from official train/test arrays, without augmentation."""
    train = unit_split(arrays.train_images, arrays.train_labels)
    return SourceDataset(
        train=train,
        test=unit_split(arrays.test_images, arrays.test_labels),
        task="classification",
        num_classes=num_classes,
        output_dim=num_classes,
        input_shape=tuple(train.x.shape[1:]),
        source=source,
    )
