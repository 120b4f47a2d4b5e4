"""The Nature-DQN Q-network (Mnih et al. 2015) with a width multiplier, for 84×84 Atari frames or small MinAtar boards.

Three convolutions with round(32w), round(64w), round(64w) filters and ReLU, then Linear → round(512w) → ReLU →
Linear(num_actions). The `stem` picks kernels and strides: "nature" is the paper's 8×8/4, 4×4/2, 3×3/1 (valid
padding) for 84×84 frames; "small" uses 3×3/1 three times, for boards such as MinAtar's 10×10 on which the Nature
strides would leave no spatial extent; "auto" chooses "nature" for frames of at least 36 pixels a side (the
smallest the Nature stem accepts) and "small" otherwise. Input: (batch, channels, height, width) floats.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from samscale.models.init import flax_init_, require_positive_int

STEMS = {"nature": ((8, 4), (4, 2), (3, 1)), "small": ((3, 1), (3, 1), (3, 1))}
"""(kernel, stride) of the three convolutions of each stem."""
BASE_CHANNELS = (32, 64, 64)
BASE_HIDDEN = 512
NATURE_MIN_SIDE = 36


def dqn_stem(stem: str, height: int, width: int) -> str:
    """The concrete stem for a requested one ("auto" resolves by frame size); unknown names are errors."""
    if stem == "auto":
        return "nature" if min(height, width) >= NATURE_MIN_SIDE else "small"
    if stem not in STEMS:
        raise ValueError(f"unknown DQN stem {stem!r}; valid: auto, {', '.join(STEMS)}")
    return stem


def _widths(multiplier: float) -> tuple[tuple[int, int, int], int]:
    channels = tuple(max(1, int(round(c * multiplier))) for c in BASE_CHANNELS)
    return channels, max(1, int(round(BASE_HIDDEN * multiplier)))  # type: ignore[return-value]


def _spatial(stem: str, height: int, width: int) -> tuple[int, int]:
    for kernel, stride in STEMS[stem]:
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    if height < 1 or width < 1:
        raise ValueError(f"the {stem} DQN stem leaves no spatial extent on these frames; use stem 'small' or 'auto'")
    return height, width


class DQN(nn.Module):
    """Q-network: 3 convs (ReLU) → flatten → Linear → ReLU → Linear(num_actions)."""

    def __init__(self, multiplier: float, in_shape: tuple[int, int, int], num_actions: int, stem: str) -> None:
        super().__init__()
        channels, hidden = _widths(multiplier)
        layers: list[nn.Module] = []
        previous = in_shape[0]
        for out, (kernel, stride) in zip(channels, STEMS[stem]):
            layers += [nn.Conv2d(previous, out, kernel, stride), nn.ReLU()]
            previous = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        height, width = _spatial(stem, in_shape[1], in_shape[2])
        self.hidden = nn.Linear(previous * height * width, hidden)
        self.head = nn.Linear(hidden, num_actions)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.hidden(self.features(x))))


def _checked(multiplier: float, in_shape: tuple[int, ...], num_actions: int, stem: str) -> str:
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not multiplier > 0:
        raise ValueError(f"DQN width multiplier must be a number > 0, got {multiplier!r}")
    if len(in_shape) != 3:
        raise ValueError(f"DQN needs in_shape (channels, height, width), got {in_shape}")
    require_positive_int("num_actions", num_actions)
    return dqn_stem(stem, in_shape[1], in_shape[2])


def dqn(
    multiplier: float = 1.0,
    in_shape: tuple[int, int, int] = (4, 84, 84),
    num_actions: int = 18,
    stem: str = "auto",
    *,
    generator: torch.Generator | None = None,
) -> DQN:
    """Build a Flax-initialized Nature-DQN network at width `multiplier`."""
    stem = _checked(multiplier, in_shape, num_actions, stem)
    return flax_init_(DQN(multiplier, tuple(in_shape), num_actions, stem), generator)  # type: ignore[arg-type]


def dqn_param_count(
    multiplier: float = 1.0, in_shape: tuple[int, int, int] = (4, 84, 84), num_actions: int = 18, stem: str = "auto"
) -> int:
    """Number of parameters of `dqn(multiplier, in_shape, num_actions, stem)`, without building it."""
    stem = _checked(multiplier, in_shape, num_actions, stem)
    channels, hidden = _widths(multiplier)
    total, previous = 0, in_shape[0]
    for out, (kernel, _) in zip(channels, STEMS[stem]):
        total += previous * out * kernel * kernel + out
        previous = out
    height, width = _spatial(stem, in_shape[1], in_shape[2])
    return total + (previous * height * width + 1) * hidden + (hidden + 1) * num_actions
