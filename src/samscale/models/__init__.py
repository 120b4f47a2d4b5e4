"""Model families of the paper (MLP, CIFAR ResNets, ResNet-50, ViT, two-layer regression), Flax-initialized.

Use `build_model(family, size, input_shape=..., num_classes=...)` with a family from `FAMILIES` and a size from
`LADDERS`, and `param_count` for closed-form sizes; the per-family constructors are exported for direct use.
"""
from samscale.models.init import flax_init_
from samscale.models.mlp import MLP, mlp
from samscale.models.regression import TwoLayer, linear, two_layer
from samscale.models.registry import (
    FAMILIES,
    LADDERS,
    UnknownFamilyError,
    build_model,
    count_params,
    describe_ladder,
    param_count,
)
from samscale.models.resnet import ResNet, resnet, resnet18, resnet50
from samscale.models.vit import ViT, vit

__all__ = [
    "FAMILIES",
    "LADDERS",
    "MLP",
    "ResNet",
    "TwoLayer",
    "UnknownFamilyError",
    "ViT",
    "build_model",
    "count_params",
    "describe_ladder",
    "flax_init_",
    "linear",
    "mlp",
    "param_count",
    "resnet",
    "resnet18",
    "resnet50",
    "two_layer",
    "vit",
]
