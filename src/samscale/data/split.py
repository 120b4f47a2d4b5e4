"""A split of a dataset held in memory as two aligned tensors, and the protocol lazily loaded splits share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from torch import Tensor

_S = TypeVar("_S", bound="LabelledSplit")


class LabelledSplit(Protocol):
    """What partitioning and label noise need from a split: labels `y`, selection, relabelling, eval view."""

    y: Tensor

    def __len__(self) -> int: ...

    def subset(self: _S, index: Tensor) -> _S: ...

    def relabel(self: _S, y: Tensor) -> _S: ...

    def as_eval(self: _S) -> _S: ...


@dataclass(frozen=True, eq=False)
class Split:
    """Preprocessed inputs `x` (float32, first dim = examples) and targets `y` (int64 labels or float32 targets)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} examples but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: Tensor) -> Split:
        """The examples at `index` (a 1-D int64 tensor), in that order; broadcast (stride-0) input dims stay so."""
        return Split(_take_keeping_broadcast(self.x, index), self.y[index])

    def relabel(self, y: Tensor) -> Split:
        """The same inputs with new targets `y`."""
        return Split(self.x, y)

    def as_eval(self) -> Split:
        """This split as seen at evaluation time (in-memory splits carry no transform, so itself)."""
        return self

    def to(self, device: torch.device | str) -> Split:
        """Both tensors on `device`."""
        return Split(self.x.to(device), self.y.to(device))


def _take_keeping_broadcast(x: Tensor, index: Tensor) -> Tensor:
    """x[index], without materializing dims of x that are expanded views (e.g. a gray image shown as 3 channels)."""
    broadcast = [dim for dim in range(1, x.dim()) if x.stride(dim) == 0 and x.shape[dim] > 1]
    if not broadcast:
        return x[index]
    compact = x
    for dim in broadcast:
        compact = compact.narrow(dim, 0, 1)
    return compact[index].expand(index.shape[0], *x.shape[1:])
