"""Residual networks of the paper: CIFAR-style ResNet-10/18/34 (width `filters`) and ImageNet ResNet-50.

CIFAR variant (docs/PROTOCOL.md §3): 3×3 stride-1 stem without max-pool; four stages of BasicBlocks with filters × (1, 2, 4, 8)
channels, stride 2 in the first block of stages 2–4. The head averages the final feature map to 1×1 with an adaptive
pool: on 32×32 inputs that map is 4×4, so this equals the authors' 4×4 average pool; on 28×28 inputs the stages give
28 → 14 → 7 → 4, again 4×4. All convolutions are bias-free; the classifier Linear has a bias.

ResNet-50 is the standard v1 network (7×7/2 stem, 3×3/2 max-pool, bottleneck stages [3, 4, 6, 3], expansion 4) with
the stride on the 3×3 convolution as in Flax's and torchvision's implementations, and the last BatchNorm scale of every
bottleneck initialized to 0 so each residual branch starts as the identity. Torch pads stride-2 convolutions and the
max-pool symmetrically where Flax's 'SAME' pads (0, 1); shapes and parameter counts are identical.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samscale.models.init import batch_norm2d, flax_init_, require_positive_int

CIFAR_STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""Blocks per stage of the CIFAR-style BasicBlock ResNets, by depth."""

RESNET50_STAGE_BLOCKS = (3, 4, 6, 3)
"""Bottleneck blocks per stage of ResNet-50."""


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)


def _conv_bn_count(in_channels: int, out_channels: int, kernel_size: int) -> int:
    return kernel_size * kernel_size * in_channels * out_channels + 2 * out_channels


def _needs_projection(in_channels: int, out_channels: int, stride: int) -> bool:
    return stride != 1 or in_channels != out_channels


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if not _needs_projection(in_channels, out_channels, stride):
        return nn.Identity()
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), batch_norm2d(out_channels))


def _shortcut_count(in_channels: int, out_channels: int, stride: int) -> int:
    return _conv_bn_count(in_channels, out_channels, 1) if _needs_projection(in_channels, out_channels, stride) else 0


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, added to the (projected) input, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, width, 3, stride)
        self.bn1 = batch_norm2d(width)
        self.conv2 = _conv(width, width, 3)
        self.bn2 = batch_norm2d(width)
        self.shortcut = _shortcut(in_channels, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(self.shortcut(x) + y)

    @staticmethod
    def param_count(in_channels: int, width: int, stride: int) -> int:
        """Number of parameters of `BasicBlock(in_channels, width, stride)`."""
        return _conv_bn_count(in_channels, width, 3) + _conv_bn_count(width, width, 3) + _shortcut_count(
            in_channels, width, stride
        )


class Bottleneck(nn.Module):
    """conv1×1 → BN → ReLU → conv3×3 (strided) → BN → ReLU → conv1×1 (4× width) → BN(γ=0), plus shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv(in_channels, width, 1)
        self.bn1 = batch_norm2d(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = batch_norm2d(width)
        self.conv3 = _conv(width, out_channels, 1)
        self.bn3 = batch_norm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(self.shortcut(x) + y)

    def init_custom_parameters_(self, generator: torch.Generator | None) -> None:
        """Zero the last BN scale so the block starts as its shortcut (as in the authors' Flax ResNet-50)."""
        nn.init.zeros_(self.bn3.weight)

    @staticmethod
    def param_count(in_channels: int, width: int, stride: int) -> int:
        """Number of parameters of `Bottleneck(in_channels, width, stride)`."""
        out_channels = width * Bottleneck.expansion
        return (
            _conv_bn_count(in_channels, width, 1)
            + _conv_bn_count(width, width, 3)
            + _conv_bn_count(width, out_channels, 1)
            + _shortcut_count(in_channels, out_channels, stride)
        )


Block = type[BasicBlock] | type[Bottleneck]


def _block_layout(block: Block, stage_blocks: Sequence[int], filters: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (stage, in_channels, width, stride) for every residual block in order."""
    in_channels = filters
    for stage, num_blocks in enumerate(stage_blocks):
        width = filters * 2**stage
        for index in range(num_blocks):
            yield stage, in_channels, width, 2 if stage > 0 and index == 0 else 1
            in_channels = width * block.expansion


class ResNet(nn.Module):
    """Stem → four residual stages → global average pool → Linear; the stem decides CIFAR vs ImageNet style."""

    def __init__(
        self,
        block: Block,
        stage_blocks: Sequence[int],
        filters: int,
        num_classes: int,
        in_channels: int,
        imagenet_stem: bool,
    ) -> None:
        super().__init__()
        if imagenet_stem:
            self.stem = nn.Sequential(
                _conv(in_channels, filters, 7, stride=2),
                batch_norm2d(filters),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(_conv(in_channels, filters, 3), batch_norm2d(filters), nn.ReLU())
        stages: list[list[nn.Module]] = [[] for _ in stage_blocks]
        for stage, block_in, width, stride in _block_layout(block, stage_blocks, filters):
            stages[stage].append(block(block_in, width, stride))
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(filters * 2 ** (len(stage_blocks) - 1) * block.expansion, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.head(self.pool(x).flatten(1))


def _resnet_count(
    block: Block, stage_blocks: Sequence[int], filters: int, num_classes: int, in_channels: int, stem_kernel: int
) -> int:
    total = _conv_bn_count(in_channels, filters, stem_kernel)
    total += sum(block.param_count(i, w, s) for _, i, w, s in _block_layout(block, stage_blocks, filters))
    features = filters * 2 ** (len(stage_blocks) - 1) * block.expansion
    return total + features * num_classes + num_classes


def _stage_blocks(depth: int) -> tuple[int, int, int, int]:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth not in CIFAR_STAGE_BLOCKS:
        raise ValueError(f"unsupported ResNet depth {depth!r}; valid depths: {sorted(CIFAR_STAGE_BLOCKS)}")
    return CIFAR_STAGE_BLOCKS[depth]


def _check(filters: int, num_classes: int, in_channels: int) -> None:
    require_positive_int("filters", filters)
    require_positive_int("num_classes", num_classes)
    require_positive_int("in_channels", in_channels)


def resnet(
    depth: int = 18,
    filters: int = 64,
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    generator: torch.Generator | None = None,
) -> ResNet:
    """CIFAR-style BasicBlock ResNet of the given depth (10, 18 or 34) and base width, Flax-initialized."""
    stage_blocks = _stage_blocks(depth)
    _check(filters, num_classes, in_channels)
    model = ResNet(BasicBlock, stage_blocks, filters, num_classes, in_channels, imagenet_stem=False)
    return flax_init_(model, generator)


def resnet18(
    filters: int = 64, num_classes: int = 10, in_channels: int = 3, *, generator: torch.Generator | None = None
) -> ResNet:
    """The paper's CIFAR-10 ResNet-18 (11,173,962 parameters at filters=64, 10 classes), Flax-initialized."""
    return resnet(18, filters, num_classes, in_channels, generator=generator)


def resnet50(
    filters: int = 64, num_classes: int = 1000, in_channels: int = 3, *, generator: torch.Generator | None = None
) -> ResNet:
    """The paper's ImageNet ResNet-50 (25,557,032 parameters at filters=64, 1000 classes), Flax-initialized."""
    _check(filters, num_classes, in_channels)
    model = ResNet(Bottleneck, RESNET50_STAGE_BLOCKS, filters, num_classes, in_channels, imagenet_stem=True)
    return flax_init_(model, generator)


def resnet_param_count(depth: int = 18, filters: int = 64, num_classes: int = 10, in_channels: int = 3) -> int:
    """Number of parameters of `resnet(depth, filters, num_classes, in_channels)`, without building it."""
    stage_blocks = _stage_blocks(depth)
    _check(filters, num_classes, in_channels)
    return _resnet_count(BasicBlock, stage_blocks, filters, num_classes, in_channels, stem_kernel=3)


def resnet18_param_count(filters: int = 64, num_classes: int = 10, in_channels: int = 3) -> int:
    """Number of parameters of `resnet18(filters, num_classes, in_channels)`, without building it."""
    return resnet_param_count(18, filters, num_classes, in_channels)


def resnet50_param_count(filters: int = 64, num_classes: int = 1000, in_channels: int = 3) -> int:
    """Number of parameters of `resnet50(filters, num_classes, in_channels)`, without building it."""
    _check(filters, num_classes, in_channels)
    return _resnet_count(Bottleneck, RESNET50_STAGE_BLOCKS, filters, num_classes, in_channels, stem_kernel=7)
