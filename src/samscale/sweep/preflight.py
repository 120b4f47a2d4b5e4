"""Preflight: what only this machine can tell about a sweep's runs, checked once before any run starts.

A RunSpec is validated on its own (fields, ranges, DQN settings); some mistakes depend on the machine or the data
instead: a device that is not here, dataset options the dataset does not take, files that are absent, a validation
split or training subset larger than the dataset. Found while training, each would write a failed record and repeat
for every run of the sweep; found here, the sweep (or `samscale train`) stops with one message before anything is
written. Each distinct data source is loaded once for its size.
"""
from __future__ import annotations

import json
from typing import Iterable, Sequence

import torch

from samscale.data.minatar_env import minatar_version
from samscale.data.options import resolve_options
from samscale.data.partition import check_partition
from samscale.data.paths import dataset_dir
from samscale.data.registry import DATASETS, load_dataset
from samscale.errors import ConfigError
from samscale.spec.run import RunSpec


def check_device(device: str) -> None:
    """ConfigError unless `device` ('auto', 'cpu', 'cuda[:N]', 'mps', 'xpu[:N]') exists on this machine."""
    kind, _, index = device.partition(":")
    if kind in ("auto", "cpu"):
        return
    if kind == "cuda":
        available, count = torch.cuda.is_available(), torch.cuda.device_count()
    elif kind == "xpu":
        available = hasattr(torch, "xpu") and torch.xpu.is_available()
        count = torch.xpu.device_count() if available else 0
    else:  # mps
        available, count = torch.backends.mps.is_available(), 1
    if not available:
        raise ConfigError(f"runtime.device {device!r}: this machine has no {kind} device (torch {torch.__version__} "
                          f"finds none); use runtime.device: auto (the best device present) or cpu")
    if index and int(index) >= count:
        raise ConfigError(f"runtime.device {device!r}: this machine has {count} {kind} device(s), numbered 0.."
                          f"{count - 1}")


def _options_key(spec: RunSpec) -> tuple[str, str]:
    return spec.data.name, json.dumps(spec.data.options, sort_keys=True)


_SIZES: dict[tuple[str, str, str], int] = {}


def training_size(name: str, options: dict) -> int:
    """Examples in the official training set of dataset `name` with `options` (loads its source: files must exist;
    DatasetUnavailable lists where it looked and how to provide them). Remembered per dataset folder for this
    process, so planning a sweep twice (the CLI plans, then sweeps) loads a large dataset once."""
    key = (name, json.dumps(options, sort_keys=True), str(dataset_dir(name).resolve()))
    if key not in _SIZES:
        _SIZES[key] = len(load_dataset(name, val_size=0, augment=False, **options).train)
    return _SIZES[key]


def preflight(specs: Sequence[RunSpec]) -> None:
    """Check every run's device, dataset options, data files and split sizes; ConfigError or DatasetUnavailable
    (naming the bad value and a run it belongs to) at the first problem. Each data source is loaded once."""
    for device in sorted({spec.runtime.device for spec in specs}):
        check_device(device)
    if any(spec.rl.env is not None for spec in specs):
        minatar_version()
    supervised = [spec for spec in specs if spec.rl.env is None]
    groups: dict[tuple[str, str], list[RunSpec]] = {}
    for spec in supervised:
        groups.setdefault(_options_key(spec), []).append(spec)
    for (name, _), group in groups.items():  # cheap checks first: no data is loaded for a misspelt option
        entry = DATASETS[name]
        try:
            resolve_options(name, group[0].data.options, entry.options)
        except ConfigError as err:
            raise ConfigError(f"data.options of run {group[0].label()}: {err}") from None
        carved = next((spec for spec in group if spec.data.val_size != 0), None)
        if entry.official_validation and carved is not None:
            raise ConfigError(f"data.val_size={carved.data.val_size!r} of run {carved.label()}: dataset {name!r} "
                              "comes with its own validation split, which is used as is; set val_size: 0")
        noisy = next((spec for spec in group if spec.data.label_noise > 0), None)
        if noisy is not None and entry.task != "classification":
            raise ConfigError(f"data.label_noise={noisy.data.label_noise} of run {noisy.label()} needs a "
                              f"classification dataset; {name!r} is {entry.task}")
    for (name, _), group in groups.items():
        _check_splits(name, group)


def _check_splits(name: str, group: Iterable[RunSpec]) -> None:
    """Every run's val_size and train_subset fit the training set of its (one) data source."""
    group = list(group)
    n = training_size(name, dict(group[0].data.options))
    seen = set()
    for spec in group:
        key = (spec.data.val_size, spec.data.train_subset)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_partition(n, val_size=spec.data.val_size, train_subset=spec.data.train_subset)
        except ConfigError as err:
            raise ConfigError(f"data of run {spec.label()} ({name}): {err}") from None
