"""Fully connected classifier of the MNIST experiment: flatten → [Linear → ReLU] per hidden layer → Linear."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samscale.models.init import flax_init_, require_positive_int


class MLP(nn.Module):
    """Multilayer perceptron with ReLU hidden layers, biases on, no normalization or dropout (docs/PROTOCOL.md §3)."""

    def __init__(self, hidden: Sequence[int], in_features: int, num_classes: int) -> None:
        super().__init__()
        widths = (in_features, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.head(x)


def _checked(hidden: Sequence[int], in_features: int, num_classes: int) -> tuple[int, ...]:
    hidden = tuple(hidden)
    for i, width in enumerate(hidden):
        require_positive_int(f"hidden[{i}]", width)
    require_positive_int("in_features", in_features)
    require_positive_int("num_classes", num_classes)
    return hidden


def mlp(
    hidden: Sequence[int] = (300, 100),
    in_features: int = 784,
    num_classes: int = 10,
    *,
    generator: torch.Generator | None = None,
) -> MLP:
    """Build a Flax-initialized MLP; the paper's MNIST ladder uses hidden = k × (300, 100)."""
    hidden = _checked(hidden, in_features, num_classes)
    return flax_init_(MLP(hidden, in_features, num_classes), generator)


def mlp_param_count(hidden: Sequence[int] = (300, 100), in_features: int = 784, num_classes: int = 10) -> int:
    """Number of parameters of `mlp(hidden, in_features, num_classes)`, without building it."""
    widths = (in_features, *_checked(hidden, in_features, num_classes), num_classes)
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
