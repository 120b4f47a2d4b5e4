"""Regression models: a two-layer network (synthetic teacher–student task, 1-D solution-space toy) and a linear model.

Inputs are flattened, outputs have shape (batch, out_features) — (batch, 1) for scalar regression.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from samscale.models.init import flax_init_, require_positive_int

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "identity": nn.Identity}
"""Hidden-layer nonlinearities of `two_layer`, by name."""


class TwoLayer(nn.Module):
    """x ↦ output(σ(hidden(x))): one hidden layer of `width` units."""

    def __init__(self, width: int, in_features: int, out_features: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, width, bias=bias)
        self.activation = ACTIVATIONS[activation]()
        self.output = nn.Linear(width, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.activation(self.hidden(x.flatten(1))))


def _check(width: int, in_features: int, out_features: int, activation: str) -> None:
    require_positive_int("width", width)
    require_positive_int("in_features", in_features)
    require_positive_int("out_features", out_features)
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")


def two_layer(
    width: int,
    in_features: int,
    out_features: int = 1,
    activation: str = "relu",
    bias: bool = True,
    *,
    generator: torch.Generator | None = None,
) -> TwoLayer:
    """Build a Flax-initialized two-layer network with `width` hidden units."""
    _check(width, in_features, out_features, activation)
    return flax_init_(TwoLayer(width, in_features, out_features, activation, bias), generator)


def two_layer_param_count(
    width: int, in_features: int, out_features: int = 1, activation: str = "relu", bias: bool = True
) -> int:
    """Number of parameters of `two_layer(width, in_features, out_features, activation, bias)`."""
    _check(width, in_features, out_features, activation)
    return (in_features + bias) * width + (width + bias) * out_features


def linear(
    in_features: int, out_features: int = 1, bias: bool = True, *, generator: torch.Generator | None = None
) -> nn.Sequential:
    """Build a Flax-initialized linear model (flatten → Linear), the zero-hidden-layer baseline."""
    require_positive_int("in_features", in_features)
    require_positive_int("out_features", out_features)
    return flax_init_(nn.Sequential(nn.Flatten(), nn.Linear(in_features, out_features, bias=bias)), generator)
