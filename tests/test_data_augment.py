"""Batched pad-crop-flip against hand slicing of an explicitly padded image."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samscale.data import PadCropFlip, pad_crop_flip
from samscale.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD


def _images(batch: int, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_crop_equals_the_hand_slice_of_the_padded_image():
    pad, size = 2, 5
    offsets = [(top, left) for top in range(2 * pad + 1) for left in range(2 * pad + 1)]
    x = _images(len(offsets), size=size)
    fill = torch.tensor([-1.5, 0.25, 7.0])
    top = torch.tensor([o[0] for o in offsets])
    left = torch.tensor([o[1] for o in offsets])
    out = pad_crop_flip(x, top, left, torch.zeros(len(offsets), dtype=torch.bool), pad=pad, fill=fill)
    for i, (t, l) in enumerate(offsets):
        padded = torch.stack([F.pad(x[i, c], (pad, pad, pad, pad), value=float(fill[c])) for c in range(3)])
        assert torch.equal(out[i], padded[:, t : t + size, l : l + size]), (t, l)


def test_flip_equals_torch_flip_of_the_crop():
    x = _images(6)
    top, left = torch.tensor([0, 4, 2, 1, 3, 4]), torch.tensor([4, 0, 2, 3, 1, 4])
    fill = torch.tensor([0.5, -0.5, 2.0])
    flips = torch.tensor([True, False, True, True, False, True])
    plain = pad_crop_flip(x, top, left, torch.zeros(6, dtype=torch.bool), pad=2, fill=fill)
    flipped = pad_crop_flip(x, top, left, flips, pad=2, fill=fill)
    assert torch.equal(flipped[flips], torch.flip(plain[flips], dims=[-1]))
    assert torch.equal(flipped[~flips], plain[~flips])


def test_centered_crop_without_flip_is_the_identity():
    x = _images(3)
    centre = torch.full((3,), 4)
    out = pad_crop_flip(x, centre, centre, torch.zeros(3, dtype=torch.bool), pad=4, fill=torch.zeros(3))
    assert torch.equal(out, x)


def test_cifar_pad_value_is_raw_zero_after_normalization():
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    augment = PadCropFlip(pad=4, fill=-mean / std)
    x = _images(1, size=32)
    corner = pad_crop_flip(x, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]), pad=4, fill=augment.fill)
    raw = corner[0] * std.view(3, 1, 1) + mean.view(3, 1, 1)
    torch.testing.assert_close(raw[:, :4, :], torch.zeros(3, 4, 32), rtol=0, atol=1e-6)
    torch.testing.assert_close(raw[:, :, :4], torch.zeros(3, 32, 4), rtol=0, atol=1e-6)


def test_random_draws_come_from_the_generator_in_a_documented_order():
    x = _images(64, size=6)
    augment = PadCropFlip(pad=3, fill=[0.1, 0.2, 0.3])
    out = augment(x, torch.Generator().manual_seed(11))
    replay = torch.Generator().manual_seed(11)
    offsets = torch.randint(0, 7, (2, 64), generator=replay)
    flips = torch.rand(64, generator=replay) < 0.5
    assert torch.equal(out, pad_crop_flip(x, offsets[0], offsets[1], flips, pad=3, fill=augment.fill))
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(11)))
    assert not torch.equal(out, augment(x, torch.Generator().manual_seed(12)))


def test_without_flip_no_example_is_mirrored():
    x = _images(32, size=4)
    out = PadCropFlip(pad=0, flip=False)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_bad_shapes_and_settings_are_rejected():
    with pytest.raises(ValueError, match="pad must be a non-negative integer, got -1"):
        PadCropFlip(pad=-1)
    with pytest.raises(ValueError, match=r"expects a batch of images \(B, C, H, W\), got shape \(4, 3\)"):
        PadCropFlip()(torch.zeros(4, 3), torch.Generator())
    with pytest.raises(ValueError, match="fill has 2 channel values but the images have 3 channels"):
        PadCropFlip(fill=[0.0, 1.0])(torch.zeros(1, 3, 4, 4), torch.Generator())
