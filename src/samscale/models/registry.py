"""Model families by name: paper size ladders, construction from (family, size), and closed-form parameter counts.

`size` is the family's ladder key: the MLP width multiplier k (hidden = round(300k), round(100k)), the ResNet base
filters, the ViT embedding width (or a named width), the depth of the depth-variant ResNet, the two-layer width, or
the Transformer tagger's d_model.
Architecture knobs not covered by `size` are keyword options (e.g. `build_model("vit", 64, depth=8)`); every family
lists its valid options in `FAMILIES[name].options`. `param_count` never builds a module, so the largest ladder entries
(ResNet-50 at 64 filters: 25,557,032 parameters) are free to count.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from samscale.models.dqn import dqn, dqn_param_count
from samscale.models.gcn import gcn, gcn_param_count
from samscale.models.lstm import lstm_classifier, lstm_param_count
from samscale.models.mlp import mlp, mlp_param_count
from samscale.models.regression import two_layer, two_layer_param_count
from samscale.models.resnet import (
    CIFAR_STAGE_BLOCKS,
    resnet,
    resnet18,
    resnet18_param_count,
    resnet50,
    resnet50_param_count,
    resnet_param_count,
)
from samscale.models.transformer import transformer_param_count, transformer_tagger
from samscale.models.vit import vit, vit_param_count

Size = int | float | str

VIT_NAMED_WIDTHS: Mapping[str, int] = MappingProxyType(
    {"xxs": 16, "xs": 32, "s": 48, "m": 64, "l": 96, "xl": 128}
)
"""Named ViT sizes and their embedding widths (depth 6, MLP ratio 2): "m" is the ≈209k-parameter model."""

VIT_HEAD_DIM = 16
"""Target per-head width when the ViT's number of heads is not given."""


class UnknownFamilyError(KeyError):
    """A model family name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Family:
    """One model family: its paper ladder, default data shape, and how a size becomes constructor arguments."""

    name: str
    size_meaning: str
    ladder: tuple[Size, ...]
    default_input_shape: tuple[int, ...]
    default_num_classes: int
    options: Mapping[str, Any]  # valid keyword options and their defaults
    resolve: Callable[[Any, tuple[int, ...], int, dict[str, Any]], dict[str, Any]]
    constructor: Callable[..., nn.Module]
    counter: Callable[..., int]

    def arguments(self, size: Size, input_shape: Sequence[int] | None, num_classes: int | None, options: dict) -> dict:
        """Constructor arguments for `size` on data of `input_shape` with `num_classes` outputs."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise ValueError(f"unknown option(s) {unknown} for model family {self.name!r}; valid options: {valid}")
        shape = tuple(self.default_input_shape if input_shape is None else input_shape)
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
        classes = self.default_num_classes if num_classes is None else num_classes
        return self.resolve(size, shape, classes, {**self.options, **options})

    def size_error(self, size: object) -> ValueError:
        """The error for a size this family cannot build, naming what a size means and the ladder."""
        ladder = ", ".join(str(s) for s in self.ladder)
        return ValueError(f"invalid {self.name} size {size!r}: expected {self.size_meaning} (ladder: {ladder})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int_size(family: str, size: Any) -> int:
    """`size` when it is a positive int (a width or a filter count), else the family's size error."""
    if not _is_int(size) or size < 1:
        raise FAMILIES[family].size_error(size)
    return size


def _token_shape(family: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(length, vocabulary size): the input shape of token-id models."""
    if len(shape) != 2:
        raise ValueError(f"{family} needs input_shape (length, vocabulary size) of token-id inputs, got {shape}")
    return shape  # type: ignore[return-value]


def _image_shape(family: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{family} needs input_shape (channels, height, width), got {shape}")
    return shape  # type: ignore[return-value]


def _resolve_mlp(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not size > 0:
        raise FAMILIES["mlp"].size_error(size)
    hidden = tuple(int(round(base * size)) for base in options["base_hidden"])
    if any(width < 1 for width in hidden):
        raise ValueError(f"mlp size {size!r} rounds hidden widths {options['base_hidden']} to {hidden}; use a larger k")
    return dict(hidden=hidden, in_features=math.prod(shape), num_classes=classes)


def _resolve_resnet18(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    size = _positive_int_size("resnet18", size)
    return dict(filters=size, num_classes=classes, in_channels=_image_shape("resnet18", shape)[0])


def _resolve_resnet(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    if not _is_int(size) or size not in CIFAR_STAGE_BLOCKS:
        raise FAMILIES["resnet"].size_error(size)
    channels = _image_shape("resnet", shape)[0]
    return dict(depth=size, filters=options["filters"], num_classes=classes, in_channels=channels)


def _resolve_resnet50(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    size = _positive_int_size("resnet50", size)
    return dict(filters=size, num_classes=classes, in_channels=_image_shape("resnet50", shape)[0])


def default_vit_heads(width: int) -> int:
    """Number of heads for a ViT of `width`: the largest divisor of width not above width / 16 (at least 1)."""
    return next(h for h in range(max(1, width // VIT_HEAD_DIM), 0, -1) if width % h == 0)


def _resolve_vit(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    width = VIT_NAMED_WIDTHS.get(size, size) if isinstance(size, str) else size
    if not _is_int(width) or width < 1:
        raise FAMILIES["vit"].size_error(size)
    channels, height, img_width = _image_shape("vit", shape)
    heads = options["heads"] if options["heads"] is not None else default_vit_heads(width)
    return dict(width=width, depth=options["depth"], heads=heads, mlp_ratio=options["mlp_ratio"],
                patch_size=options["patch_size"], image_size=(height, img_width), in_channels=channels,
                num_classes=classes, pool=options["pool"])


def _resolve_two_layer(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    size = _positive_int_size("two_layer", size)
    return dict(width=size, in_features=math.prod(shape), out_features=classes,
                activation=options["activation"], bias=options["bias"])


def _resolve_gcn(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    size = _positive_int_size("gcn", size)
    if len(shape) != 1:
        raise ValueError(f"gcn needs input_shape (node features,), got {shape}")
    return dict(width=size, depth=options["depth"], in_features=shape[0], num_classes=classes)


def _resolve_lstm(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    size = _positive_int_size("lstm", size)
    return dict(width=size, vocab_size=_token_shape("lstm", shape)[1], num_classes=classes)


def _resolve_transformer(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    size = _positive_int_size("transformer", size)
    length, vocab_size = _token_shape("transformer", shape)
    return dict(width=size, depth=options["depth"], heads=options["heads"], vocab_size=vocab_size, max_len=length,
                num_classes=classes)


def _resolve_dqn(size: Any, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not size > 0:
        raise FAMILIES["dqn"].size_error(size)
    return dict(multiplier=size, in_shape=_image_shape("dqn", shape), num_actions=classes, stem=options["stem"])


FAMILIES: Mapping[str, Family] = MappingProxyType({
    "mlp": Family(
        name="mlp",
        size_meaning="a width multiplier k > 0 (hidden = round(300k), round(100k))",
        ladder=(0.25, 0.5, 1, 4, 10),
        default_input_shape=(1, 28, 28),
        default_num_classes=10,
        options={"base_hidden": (300, 100)},
        resolve=_resolve_mlp,
        constructor=mlp,
        counter=mlp_param_count,
    ),
    "resnet18": Family(
        name="resnet18",
        size_meaning="the base number of filters, a positive int",
        ladder=(4, 8, 16, 32, 64, 128, 256),
        default_input_shape=(3, 32, 32),
        default_num_classes=10,
        options={},
        resolve=_resolve_resnet18,
        constructor=resnet18,
        counter=resnet18_param_count,
    ),
    "resnet": Family(
        name="resnet",
        size_meaning=f"a depth in {sorted(CIFAR_STAGE_BLOCKS)}",
        ladder=tuple(sorted(CIFAR_STAGE_BLOCKS)),
        default_input_shape=(3, 32, 32),
        default_num_classes=10,
        options={"filters": 64},
        resolve=_resolve_resnet,
        constructor=resnet,
        counter=resnet_param_count,
    ),
    "resnet50": Family(
        name="resnet50",
        size_meaning="the base number of filters, a positive int",
        ladder=(16, 32, 48, 56, 64),
        default_input_shape=(3, 224, 224),
        default_num_classes=1000,
        options={},
        resolve=_resolve_resnet50,
        constructor=resnet50,
        counter=resnet50_param_count,
    ),
    "vit": Family(
        name="vit",
        size_meaning=f"an embedding width (positive int) or a name in {sorted(VIT_NAMED_WIDTHS)}",
        ladder=(16, 32, 48, 64, 96, 128),
        default_input_shape=(3, 32, 32),
        default_num_classes=10,
        options={"depth": 6, "heads": None, "mlp_ratio": 2.0, "patch_size": 4, "pool": "cls"},
        resolve=_resolve_vit,
        constructor=vit,
        counter=vit_param_count,
    ),
    "two_layer": Family(
        name="two_layer",
        size_meaning="the hidden width, a positive int",
        ladder=(100, 200, 400, 600, 800, 1000),
        default_input_shape=(100,),
        default_num_classes=1,
        options={"activation": "relu", "bias": True},
        resolve=_resolve_two_layer,
        constructor=two_layer,
        counter=two_layer_param_count,
    ),
    "gcn": Family(
        name="gcn",
        size_meaning="the hidden width, a positive int (5 residual graph convolutions by default)",
        ladder=(200, 300, 450, 600, 730),
        default_input_shape=(31,),  # 31 one-hot atom features (samscale.data.molecules)
        default_num_classes=3,
        options={"depth": 5},
        resolve=_resolve_gcn,
        constructor=gcn,
        counter=gcn_param_count,
    ),
    "lstm": Family(
        name="lstm",
        size_meaning="the embedding and hidden width, a positive int",
        ladder=(48, 96, 192, 384, 850),
        default_input_shape=(64, 10_002),  # SST-2: sentences of up to 64 tokens, 10,000 words + pad + unknown
        default_num_classes=2,
        options={},
        resolve=_resolve_lstm,
        constructor=lstm_classifier,
        counter=lstm_param_count,
    ),
    "transformer": Family(
        name="transformer",
        size_meaning="d_model, a positive int (6 pre-LN encoder layers, d_model/64 heads, feed-forward 4·d_model)",
        ladder=(128, 256, 384, 512, 640),
        default_input_shape=(128, 33_502),  # 128 positions, 33,500 words + pad + unknown: the paper's 5.5M–51M
        default_num_classes=17,  # the UPOS tags
        options={"depth": 6, "heads": None},
        resolve=_resolve_transformer,
        constructor=transformer_tagger,
        counter=transformer_param_count,
    ),
    "dqn": Family(
        name="dqn",
        size_meaning="a width multiplier w > 0 of the Nature-DQN network (filters 32w, 64w, 64w; hidden 512w)",
        ladder=(0.5, 0.75, 1, 1.5, 2),
        default_input_shape=(4, 84, 84),  # Atari: 4 stacked 84x84 grey frames, 18 actions
        default_num_classes=18,
        options={"stem": "auto"},
        resolve=_resolve_dqn,
        constructor=dqn,
        counter=dqn_param_count,
    ),
})
"""Registered model families by name."""

LADDERS: Mapping[str, tuple[Size, ...]] = MappingProxyType({name: f.ladder for name, f in FAMILIES.items()})
"""The paper's size ladder of every family (ViT and two-layer ladders are ours: ≈1.5e4–8e5 and ≈1e4–1e5 params;
GCN and LSTM widths are ours, chosen to span the paper's 0.2M–2.7M and 0.5M–15M; DQN multipliers span its 0.4M–6.7M on Atari frames;
the Transformer's d_model 128…640 are the paper's, 5.50M–51.1M at the vocabulary its counts imply)."""


def get_family(family: str) -> Family:
    """The registered family called `family`; raises UnknownFamilyError listing the valid names."""
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise UnknownFamilyError(
            f"unknown model family {family!r}; valid: {', '.join(sorted(FAMILIES))}"
        ) from None


def build_model(
    family: str,
    size: Size,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> nn.Module:
    """Build the Flax-initialized model of `family` at ladder key `size` for inputs of `input_shape` (no batch dim)."""
    spec = get_family(family)
    return spec.constructor(**spec.arguments(size, input_shape, num_classes, options), generator=generator)


def param_count(
    family: str,
    size: Size,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    **options: Any,
) -> int:
    """Parameter count of `build_model(family, size, ...)` in closed form, without building the module."""
    spec = get_family(family)
    return spec.counter(**spec.arguments(size, input_shape, num_classes, options))


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameters of a built model; shared tensors count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe_ladder(
    family: str,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """One row {"size", "n_params"} per entry of the family's paper ladder, counted in closed form."""
    data = dict(input_shape=input_shape, num_classes=num_classes)
    ladder = get_family(family).ladder
    return [{"size": size, "n_params": param_count(family, size, **data, **options)} for size in ladder]
