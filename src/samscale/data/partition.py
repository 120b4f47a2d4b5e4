"""Seeded carving of a validation split (and an optional training subset) out of the official training set."""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from samscale.data.errors import ConfigError


def validation_count(val_size: int | float, n: int) -> int:
    """Number of validation examples: `val_size` itself if an int, else round(val_size * n) for a fraction in [0, 1)."""
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise ConfigError(f"val_size must be an int count or a float fraction, got {val_size!r}")
    if isinstance(val_size, numbers.Integral):
        if not 0 <= val_size < n:
            raise ConfigError(f"val_size={val_size} must be a count in [0, {n - 1}] (the training set has {n})")
        return int(val_size)
    if not 0.0 <= val_size < 1.0:
        raise ConfigError(f"val_size={val_size} as a fraction must lie in [0, 1)")
    return int(round(val_size * n))


def partition_indices(
    n: int, *, val_size: int | float, seed: int, train_subset: int | None = None
) -> tuple[Tensor, Tensor]:
    """Sorted (train, validation) indices into `n` training examples, disjoint, from one permutation seeded by `seed`.

    The validation split is the first `val_size` entries of the permutation; the training split is the rest, or
    only the next `train_subset` of them when given (so smaller subsets are nested in larger ones for one seed).
    """
    n_val = check_partition(n, val_size=val_size, train_subset=train_subset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rest = order[n_val:] if train_subset is None else order[n_val:n_val + train_subset]
    return rest.sort().values, order[:n_val].sort().values


def check_partition(n: int, *, val_size: int | float, train_subset: int | None = None) -> int:
    """The validation count for `n` training examples, after checking that `val_size` and `train_subset` fit them
    (ConfigError naming the value and the sizes otherwise); cheap, so a sweep checks every run before it starts."""
    n_val = validation_count(val_size, n)
    if train_subset is not None:
        if isinstance(train_subset, bool) or not isinstance(train_subset, numbers.Integral) or train_subset < 1:
            raise ConfigError(f"train_subset must be a positive integer or None, got {train_subset!r}")
        if train_subset > n - n_val:
            raise ConfigError(
                f"train_subset={train_subset} exceeds the {n - n_val} training examples left after validation"
            )
    return n_val
