"""The shared protocol of load_dataset: seeded validation carving, training subsets, symmetric label noise,
option validation. A toy classification source is registered for the duration of each test."""
from __future__ import annotations

import math

import pytest
import torch

from samscale.data import DATASETS, Dataset, DatasetEntry, SourceDataset, Split, UnknownDataset, load_dataset
from samscale.data.label_noise import symmetric_label_noise
from samscale.data.partition import partition_indices
from samscale.errors import ConfigError

N_TRAIN, N_TEST, CLASSES = 10_000, 500, 7


def build_toy(*, root, download, augment, scale: float = 1.0) -> SourceDataset:
    """Inputs carry their own index (x[i] = i * scale), so every selection can be traced back exactly."""
    labels = torch.arange(N_TRAIN + N_TEST) % CLASSES
    x = torch.arange(N_TRAIN + N_TEST, dtype=torch.float32).unsqueeze(1) * scale
    return SourceDataset(
        train=Split(x[:N_TRAIN], labels[:N_TRAIN]),
        test=Split(x[N_TRAIN:], labels[N_TRAIN:]),
        task="classification", num_classes=CLASSES, output_dim=CLASSES, input_shape=(1,), source="toy",
    )


@pytest.fixture(autouse=True)
def toy(monkeypatch):
    monkeypatch.setitem(DATASETS, "toy", DatasetEntry(build_toy, "indices as inputs"))


def _indices(split: Split) -> list[int]:
    return split.x[:, 0].long().tolist()


def test_validation_is_disjoint_exact_in_size_and_seeded():
    ds = load_dataset("toy", val_size=1234, split_seed=3)
    train, val = set(_indices(ds.train)), set(_indices(ds.val))
    assert len(ds.val) == 1234 and len(ds.train) == N_TRAIN - 1234
    assert not train & val and train | val == set(range(N_TRAIN))
    assert _indices(load_dataset("toy", val_size=1234, split_seed=3).val) == _indices(ds.val)
    assert _indices(load_dataset("toy", val_size=1234, split_seed=4).val) != _indices(ds.val)
    assert _indices(ds.test) == list(range(N_TRAIN, N_TRAIN + N_TEST))
    assert ds.train.y.tolist() == [i % CLASSES for i in _indices(ds.train)]


@pytest.mark.parametrize("fraction, expected", [(0.1, 1000), (0.25, 2500), (0.00026, 3), (0.0, 0)])
def test_fractional_validation_size_rounds_to_the_nearest_count(fraction, expected):
    ds = load_dataset("toy", val_size=fraction)
    assert len(ds.val) == expected and len(ds.train) == N_TRAIN - expected


def test_empty_validation_keeps_the_whole_training_set_in_order():
    ds = load_dataset("toy", val_size=0)
    assert len(ds.val) == 0 and _indices(ds.train) == list(range(N_TRAIN))


def test_training_subsets_are_seeded_nested_and_never_touch_validation():
    small = load_dataset("toy", val_size=500, split_seed=1, train_subset=100)
    large = load_dataset("toy", val_size=500, split_seed=1, train_subset=1000)
    assert len(small.train) == 100 and len(large.train) == 1000
    assert set(_indices(small.train)) < set(_indices(large.train))
    assert _indices(small.val) == _indices(large.val)
    assert not set(_indices(large.train)) & set(_indices(large.val))
    other_seed = load_dataset("toy", val_size=500, split_seed=2, train_subset=100)
    assert _indices(other_seed.train) != _indices(small.train)


def test_label_noise_rate_is_binomial_flips_change_labels_and_only_train_is_touched():
    rate = 0.3
    clean = load_dataset("toy", val_size=0.1, split_seed=5)
    noisy = load_dataset("toy", val_size=0.1, split_seed=5, label_noise=rate, noise_seed=9)
    mask = noisy.noisy_label_mask
    n = len(noisy.train)
    assert mask.dtype == torch.bool and mask.shape == (n,)
    assert abs(mask.sum().item() - rate * n) <= 4 * math.sqrt(n * rate * (1 - rate))
    assert torch.equal(mask, noisy.train.y != clean.train.y)  # every flip changes the label, nothing else changes
    assert torch.equal(noisy.val.y, clean.val.y) and torch.equal(noisy.test.y, clean.test.y)
    assert torch.equal(noisy.train.x, clean.train.x)
    again = load_dataset("toy", val_size=0.1, split_seed=5, label_noise=rate, noise_seed=9)
    assert torch.equal(again.train.y, noisy.train.y)
    other = load_dataset("toy", val_size=0.1, split_seed=5, label_noise=rate, noise_seed=10)
    assert not torch.equal(other.noisy_label_mask, mask)
    assert load_dataset("toy").noisy_label_mask is None


def test_replacement_labels_are_uniform_over_the_other_classes():
    labels = torch.zeros(70_000, dtype=torch.int64)
    noisy, mask = symmetric_label_noise(labels, 1.0, 8, torch.Generator().manual_seed(0))
    assert mask.all()
    counts = torch.bincount(noisy, minlength=8)
    assert counts[0] == 0
    expected = 70_000 / 7
    assert (counts[1:].double() - expected).abs().max() <= 4 * math.sqrt(expected * 6 / 7)


def test_dataset_carries_source_metadata():
    ds = load_dataset("toy", scale=2.0, val_size=0)
    assert isinstance(ds, Dataset) and ds.name == "toy" and ds.source == "toy"
    assert ds.num_classes == CLASSES and ds.output_dim == CLASSES and ds.input_shape == (1,)
    assert ds.train.x[3, 0].item() == 6.0


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownDataset, match="unknown dataset 'cifar100'; valid names: cifar10, cifar10-standin"):
        load_dataset("cifar100")
    with pytest.raises(KeyError):
        DATASETS["cifar100"]


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['scal'\] for dataset 'toy'; valid options: scale"):
        load_dataset("toy", scal=2.0)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['width'\] for dataset 'mnist'; valid options: none"):
        load_dataset("mnist", width=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val_size": 10_000}, r"val_size=10000 must be a count in \[0, 9999\]"),
        ({"val_size": -1}, r"val_size=-1 must be a count"),
        ({"val_size": 1.0}, r"val_size=1.0 as a fraction must lie in \[0, 1\)"),
        ({"val_size": "10%"}, r"val_size must be an int count or a float fraction, got '10%'"),
        ({"val_size": 100, "train_subset": 9901}, r"train_subset=9901 exceeds the 9900 training examples"),
        ({"train_subset": 0}, r"train_subset must be a positive integer or None, got 0"),
        ({"label_noise": 1.5}, r"label_noise must be a rate in \[0, 1\], got 1.5"),
        ({"split_seed": "zero"}, r"split_seed must be a non-negative integer, got 'zero'"),
        ({"noise_seed": -1}, r"noise_seed must be a non-negative integer, got -1"),
    ],
)
def test_bad_protocol_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_dataset("toy", **kwargs)


def test_label_noise_on_a_regression_task_is_refused():
    with pytest.raises(ConfigError, match="label_noise=0.1 needs a classification dataset; 'sine-1d' is regression"):
        load_dataset("sine-1d", val_size=0, label_noise=0.1)


def test_partition_indices_are_sorted_and_complete():
    train, val = partition_indices(50, val_size=7, seed=0)
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(50))
