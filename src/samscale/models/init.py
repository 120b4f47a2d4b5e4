"""Flax conventions for parameter initialization and normalization layers.

The authors trained JAX/Flax models; torch defaults differ (Kaiming-uniform kernels, uniform biases). Applying
`flax_init_` makes a torch model start from the same distribution as the Flax original:

- Linear and convolution kernels: LeCun normal truncated at ±2σ, i.e. N(0, 1) restricted to [-2, 2] and scaled by
  σ = sqrt(1 / fan_in) / 0.87962566 (the truncation shrinks the std by 0.8796, so the kernel's std is sqrt(1/fan_in));
  fan_in = in_features, or in_channels / groups × kernel area.
- Biases 0; BatchNorm / LayerNorm / GroupNorm scale 1 and shift 0; BatchNorm running statistics reset.
- Parameters that need something else (ViT position embeddings, zero-initialized residual BN scales) are set by the
  owning module's `init_custom_parameters_(generator)`, called after the generic pass.
Other parameterized modules (embeddings, recurrent cells) keep their PyTorch initialization.
"""
from __future__ import annotations

import math
from typing import Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

TRUNCATED_NORMAL_STD = 0.87962566103423978
"""Standard deviation of N(0, 1) truncated to [-2, 2] (Flax's `variance_scaling` correction constant)."""

BN_MOMENTUM = 0.1
"""BatchNorm running-average momentum in torch convention (Flax's momentum 0.9 is 1 - 0.1)."""

BN_EPS = 1e-5
"""BatchNorm epsilon, as in Flax."""

LAYER_NORM_EPS = 1e-6
"""LayerNorm epsilon, Flax's default."""

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@runtime_checkable
class CustomInit(Protocol):
    """A module whose own parameters need an initialization other than the generic Flax rules."""

    def init_custom_parameters_(self, generator: torch.Generator | None) -> None:
        """Initialize this module's special parameters in place, drawing randomness from `generator`."""


def lecun_truncated_normal_(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill a Linear/conv kernel in place with Flax's LeCun-normal, truncated at ±2σ, σ = sqrt(1/fan_in)/0.8796."""
    if weight.dim() < 2:
        raise ValueError(f"a kernel needs at least 2 dimensions (out, in, ...), got shape {tuple(weight.shape)}")
    fan_in = weight[0].numel()
    scale = math.sqrt(1.0 / fan_in) / TRUNCATED_NORMAL_STD
    with torch.no_grad():
        nn.init.trunc_normal_(weight, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=generator)
        weight.mul_(scale)
    return weight


def batch_norm2d(num_features: int) -> nn.BatchNorm2d:
    """A BatchNorm2d with the Flax momentum and epsilon used throughout the paper's models."""
    return nn.BatchNorm2d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)


def flax_init_(module: ModuleT, generator: torch.Generator | None = None) -> ModuleT:
    """Re-initialize every parameter of `module` in place following Flax's defaults; returns `module`.

    Deterministic for a given `generator` state, or for a given `torch.manual_seed` when `generator` is None.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)):
            lecun_truncated_normal_(layer.weight, generator)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORM_LAYERS):
            if getattr(layer, "weight", None) is not None:
                nn.init.ones_(layer.weight)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)
            if isinstance(layer, nn.modules.batchnorm._NormBase):
                layer.reset_running_stats()
    for layer in module.modules():
        if isinstance(layer, CustomInit):
            layer.init_custom_parameters_(generator)
    return module


def require_positive_int(name: str, value: object) -> int:
    """Return `value` if it is a positive int (not a bool), else raise a ValueError naming `name` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
