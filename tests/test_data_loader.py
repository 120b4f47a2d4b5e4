"""TensorLoader: batch count, coverage, determinism, order, augmentation hook."""
from __future__ import annotations

import math

import pytest
import torch

from samscale.data import Split, TensorLoader, make_loader


def _split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).unsqueeze(1) * 10, torch.arange(n))


@pytest.mark.parametrize("n, batch", [(10, 3), (12, 4), (1, 5), (129, 128)])
def test_length_is_ceil_and_every_example_appears_once_per_epoch(n, batch):
    loader = TensorLoader(_split(n), batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == math.ceil(n / batch)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader)
        assert all(len(y) == batch for _, y in batches[:-1]) and 1 <= len(batches[-1][1]) <= batch
        seen = torch.cat([y for _, y in batches])
        assert sorted(seen.tolist()) == list(range(n))
        assert all(torch.equal(x[:, 0], y.float() * 10) for x, y in batches)  # inputs stay aligned with labels


def test_drop_last_uses_floor_and_drops_only_the_partial_batch():
    loader = TensorLoader(_split(10), 3, shuffle=True, generator=torch.Generator().manual_seed(1), drop_last=True)
    batches = list(loader)
    assert len(loader) == 3 == len(batches) and all(len(y) == 3 for _, y in batches)
    with pytest.raises(ValueError, match="drop_last with batch_size=20 > 10 examples leaves no batch"):
        TensorLoader(_split(10), 20, shuffle=False, drop_last=True)


def test_shuffle_is_deterministic_per_seed_and_differs_between_epochs():
    def epochs(seed: int) -> list[list[int]]:
        loader = TensorLoader(_split(50), 7, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [torch.cat([y for _, y in loader]).tolist() for _ in range(2)]

    first, second = epochs(3)
    assert epochs(3) == [first, second]
    assert first != second and epochs(4)[0] != first
    replay = torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()
    assert first == replay  # one permutation per epoch, drawn from the given generator


def test_without_shuffle_batches_are_consecutive_slices():
    batches = [y.tolist() for _, y in TensorLoader(_split(7), 3, shuffle=False)]
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]


def test_global_seed_drives_the_order_when_no_generator_is_given():
    loader = TensorLoader(_split(40), 40, shuffle=True)
    torch.manual_seed(123)
    first = next(iter(loader))[1]
    torch.manual_seed(123)
    assert torch.equal(next(iter(loader))[1], first)


def test_augmentation_receives_each_input_batch_and_the_generator():
    generator = torch.Generator().manual_seed(0)
    calls = []

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls.append(gen)
        return -x

    loader = TensorLoader(_split(5), 2, shuffle=False, generator=generator, augment=augment)
    xs = [x[:, 0].tolist() for x, _ in loader]
    assert xs == [[-0.0, -10.0], [-20.0, -30.0], [-40.0]] and calls == [generator] * 3


def test_make_loader_returns_a_tensor_loader_for_in_memory_splits():
    loader = make_loader(_split(9), 4, shuffle=False)
    assert isinstance(loader, TensorLoader) and len(loader) == 3


@pytest.mark.parametrize("batch", [0, -3, 2.5, True])
def test_bad_batch_size_is_named(batch):
    with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {batch!r}"):
        TensorLoader(_split(3), batch, shuffle=False)
