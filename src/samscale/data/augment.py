"""Batched image augmentation as tensor ops: pad, random crop back to size, random horizontal flip.

The crop and the flip are two gathers (rows, then columns); a flipped example reads padded column
left + W - 1 - j into output column j, so flipping costs nothing extra. The random offsets and flips are drawn on
the (CPU) generator and reach a GPU batch in one non-blocking copy from pinned memory (`host_to_device`), so
augmenting never waits for the GPU to finish its queued work.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from samscale.data.errors import ConfigError


def host_to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """`tensor` (on the CPU) on `device`: on CUDA through pinned memory and a non-blocking copy (the host does not
    wait for the device's queue; the caching host allocator keeps the pinned buffer until the copy ran)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def pad_crop_flip(x: Tensor, top: Tensor, left: Tensor, flip: Tensor, *, pad: int, fill: Tensor) -> Tensor:
    """Pad each (C, H, W) image by `pad` with per-channel `fill`, crop H x W at (top, left), mirror where `flip`.

    `top` and `left` are int64 offsets in [0, 2 * pad], `flip` a bool mask, one entry per image.
    """
    batch, channels, height, width = x.shape
    padded = x.new_empty(batch, channels, height + 2 * pad, width + 2 * pad)
    fill = fill if fill.device == x.device else host_to_device(fill, x.device)
    padded.copy_(fill.to(x.dtype).view(1, channels, 1, 1).expand_as(padded))
    padded[:, :, pad : pad + height, pad : pad + width] = x
    rows = top.view(-1, 1) + torch.arange(height, device=x.device)
    cols = left.view(-1, 1) + torch.arange(width, device=x.device)
    cols = torch.where(flip.view(-1, 1), cols.flip(1), cols)
    band = padded.gather(2, rows.view(batch, 1, height, 1).expand(batch, channels, height, width + 2 * pad))
    return band.gather(3, cols.view(batch, 1, 1, width).expand(batch, channels, height, width))


class PadCropFlip:
    """Random `pad`-pixel translation (pad with `fill`, crop back) and, if `flip`, a horizontal flip with prob 1/2.

    `fill` is per channel in the space of the inputs it receives: for normalized images pass -mean/std, which is
    what zero-padding the raw pixels before normalizing would give.
    """

    def __init__(self, pad: int = 4, fill: Sequence[float] | Tensor = (0.0,), flip: bool = True):
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ConfigError(f"pad must be a non-negative integer, got {pad!r}")
        self.pad = pad
        self.fill = torch.as_tensor(fill, dtype=torch.float32).flatten()
        self.flip = flip
        self._fills: dict[tuple[torch.device, int], Tensor] = {}  # fill values per device and channel count

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a batch (B, C, H, W); the offsets and flips are drawn from `generator`."""
        if x.dim() != 4:
            raise ValueError(f"PadCropFlip expects a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
        fill = self.fill.expand(x.shape[1]) if self.fill.numel() == 1 else self.fill
        if fill.numel() != x.shape[1]:
            raise ValueError(f"fill has {fill.numel()} channel values but the images have {x.shape[1]} channels")
        key = (x.device, x.shape[1])
        if key not in self._fills:  # copied to the device once
            self._fills[key] = host_to_device(fill.contiguous(), x.device)
        batch = x.shape[0]
        offsets = torch.randint(0, 2 * self.pad + 1, (2, batch), generator=generator, device=generator.device)
        if self.flip:
            flips = torch.rand(batch, generator=generator, device=generator.device) < 0.5
        else:
            flips = torch.zeros(batch, dtype=torch.bool, device=generator.device)
        if generator.device != x.device:  # offsets and flips in one copy
            drawn = host_to_device(torch.cat([offsets, flips.view(1, batch).long()]), x.device)
            offsets, flips = drawn[:2], drawn[2].bool()
        return pad_crop_flip(x, offsets[0], offsets[1], flips, pad=self.pad, fill=self._fills[key])

    def __repr__(self) -> str:
        return f"PadCropFlip(pad={self.pad}, fill={self.fill.tolist()}, flip={self.flip})"
