"""Symmetric label noise: each label, with probability r, is replaced by one of the *other* classes, uniformly."""
from __future__ import annotations

import torch
from torch import Tensor

from samscale.data.errors import ConfigError


def symmetric_label_noise(
    labels: Tensor, rate: float, num_classes: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(noisy labels, mask of replaced labels). A replaced label never equals the original.

    Every example draws its coin and its replacement whatever the outcome, so the noise pattern depends only on the
    generator and the number of labels.
    """
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"label_noise must lie in [0, 1], got {rate!r}")
    if num_classes < 2:
        raise ConfigError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    n = labels.shape[0]
    flip = torch.rand(n, generator=generator) < rate
    shift = torch.randint(1, num_classes, (n,), generator=generator)
    noisy = torch.where(flip, (labels + shift) % num_classes, labels)
    return noisy, flip
