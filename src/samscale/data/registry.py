"""The dataset registry and `load_dataset`: source -> seeded validation split -> optional subset -> training
vocabulary (text) -> label noise."""
from __future__ import annotations

import inspect
import os
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch

from samscale.data.cifar10 import build_cifar10
from samscale.data.dataset import Dataset, SourceDataset, Task
from samscale.data.errors import ConfigError, UnknownDataset
from samscale.data.fashion_mnist import build_fashion_mnist
from samscale.data.imagenet import build_imagenet
from samscale.data.label_noise import symmetric_label_noise
from samscale.data.mnist import build_mnist
from samscale.data.mnist1d import build_mnist1d
from samscale.data.ogb_molecules import build_ogbg_molpcba
from samscale.data.molecules import build_molecules, build_solubility
from samscale.data.options import non_negative_int, resolve_options
from samscale.data.partition import partition_indices
from samscale.data.pos import build_pos, build_pos_standin
from samscale.data.split import Split
from samscale.data.standin import build_cifar10_standin
from samscale.data.sst2 import build_sst2, build_sst2_standin
from samscale.data.synthetic import build_least_squares, build_sine_1d, build_teacher_student
from samscale.data.text import restrict_vocabulary, singleton_dropout

_COMMON = ("root", "download", "augment")


@dataclass(frozen=True)
class DatasetEntry:
    """A registered source: its builder, its task and whether it brings an official validation split (both known
    without loading it; `load_dataset` checks them against what the builder returns), and the dataset-specific
    options it accepts (with their defaults). A source with an official validation split (`SourceDataset.val`, e.g.
    OGB's scaffold split) takes `val_size=0`: nothing is carved from its training set."""

    build: Callable[..., SourceDataset]
    summary: str
    task: Task = "classification"
    official_validation: bool = False

    @property
    def options(self) -> Mapping[str, Any]:
        """Option name -> default, read from the builder's keyword-only parameters."""
        parameters = inspect.signature(self.build).parameters.values()
        return MappingProxyType({p.name: p.default for p in parameters if p.name not in _COMMON})


class _Registry(dict):
    def __missing__(self, name: str) -> DatasetEntry:
        raise UnknownDataset(f"unknown dataset {name!r}; valid names: {', '.join(sorted(self))}")


#: Dataset name -> DatasetEntry. Unknown names raise UnknownDataset listing the valid ones.
DATASETS: dict[str, DatasetEntry] = _Registry({
    "mnist": DatasetEntry(build_mnist, "MNIST 60k/10k, 1x28x28, pixels/255"),
    "fashion-mnist": DatasetEntry(build_fashion_mnist, "Fashion-MNIST 60k/10k, 1x28x28, pixels/255"),
    "cifar10": DatasetEntry(build_cifar10, "CIFAR-10 50k/10k, 3x32x32, normalized, pad-crop-flip"),
    "cifar10-standin": DatasetEntry(build_cifar10_standin,
                                    "Fashion-MNIST (or MNIST) as 3x32x32, normalized, pad-crop-flip; for cifar10"),
    "imagenet": DatasetEntry(build_imagenet, "ImageNet class folders, streamed, Inception crop / center crop"),
    "mnist1d": DatasetEntry(build_mnist1d, "MNIST-1D 4000/1000, length-40 signals, generated and cached"),
    "teacher-student": DatasetEntry(build_teacher_student, "regression on a random two-layer ReLU teacher",
                                    task="regression"),
    "least-squares": DatasetEntry(build_least_squares, "linear regression y = X w*", task="regression"),
    "sine-1d": DatasetEntry(build_sine_1d, "a handful of points of a 1-D sine", task="regression"),
    "molecules": DatasetEntry(build_molecules,
                              "your labelled molecule files (SDF or SMILES CSV) as concatenated graphs"),
    "sst2": DatasetEntry(build_sst2, "GLUE SST-2 67,349 train / 872 dev (as test) sentences from its TSV files"),
    "sst2-standin": DatasetEntry(build_sst2_standin, "generated-lexicon sentiment with negation, 8000/1000; for sst2"),
    "solubility": DatasetEntry(build_solubility,
                               "Huuskonen solubility, 1025/257 molecules, 3 classes, concatenated graphs; "
                               "for ogbg-molpcba"),
    "pos": DatasetEntry(build_pos, "a UD treebank's CoNLL-U train/test files, 17 UPOS tags per token",
                        task="tagging"),
    "pos-standin": DatasetEntry(build_pos_standin,
                                "hidden-Markov UPOS grammar with ambiguous words, 12000/2000 sentences; for pos",
                                task="tagging"),
    "ogbg-molpcba": DatasetEntry(build_ogbg_molpcba,
                                 "OGB's 437,929 molecules, 128 binary tasks (AP), scaffold train/valid/test split",
                                 task="multilabel", official_validation=True),
})


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    val_size: int | float = 0.1,
    split_seed: int = 0,
    train_subset: int | None = None,
    label_noise: float = 0.0,
    noise_seed: int = 0,
    augment: bool = True,
    download: bool = False,
    **options: Any,
) -> Dataset:
    """Load dataset `name` and apply the shared protocol, deterministically for given seeds.

    The validation split (`val_size`: a count, or a fraction of the official training set) is carved from the
    official training set with `split_seed` (datasets with an official validation split, `DatasetEntry.official_validation`,
    use it instead and take val_size=0); `train_subset` keeps that many of the remaining training examples
    (the next ones of the same permutation); symmetric label noise at rate `label_noise` (seeded by `noise_seed`)
    replaces training labels only, each by a uniformly drawn *different* class. The test split is the official
    one, untouched, except that a text source's word ids are renumbered to the training split's vocabulary
    (`SourceDataset.min_word_count`). `options` are dataset-specific (see `DATASETS[name].options`).
    """
    entry = DATASETS[name]
    settings = resolve_options(name, options, entry.options)
    if isinstance(label_noise, bool) or not isinstance(label_noise, numbers.Real) or not 0.0 <= label_noise <= 1.0:
        raise ConfigError(f"label_noise must be a rate in [0, 1], got {label_noise!r}")
    split_seed, noise_seed = non_negative_int("split_seed", split_seed), non_negative_int("noise_seed", noise_seed)
    if entry.official_validation and val_size != 0:
        raise ConfigError(f"dataset {name!r} comes with its own validation split, which is used as is: set "
                          f"val_size=0 (nothing is carved from its training set), got val_size={val_size!r}")
    source = entry.build(root=root, download=download, augment=augment, **settings)
    if source.task != entry.task or (source.val is not None) != entry.official_validation:
        raise RuntimeError(f"dataset {name!r} returned task {source.task!r} and official validation split "
                           f"{source.val is not None}, but its DatasetEntry says {entry.task!r} and "
                           f"{entry.official_validation}; correct the entry")
    train_index, val_index = partition_indices(
        len(source.train), val_size=val_size, seed=split_seed, train_subset=train_subset
    )
    whole = len(train_index) == len(source.train)  # sorted and complete: the identity, so skip the copy
    train = source.train if whole else source.train.subset(train_index)
    val = (source.val if source.val is not None else source.train.subset(val_index)).as_eval()
    test, input_shape, description = source.test, source.input_shape, source.source
    if source.min_word_count is not None:  # the vocabulary of the training split only, rare words unknown
        ids, (val_ids, test_ids), size = restrict_vocabulary(train.x, [val.x, test.x], source.min_word_count)
        train, val, test = Split(ids, train.y), Split(val_ids, val.y), Split(test_ids, test.y)
        input_shape = (*source.input_shape[:-1], size)
        description += (f"; vocabulary of the training split: {size} ids"
                        + (f" (words seen fewer than {source.min_word_count} times there are unknown)"
                           if source.min_word_count > 1 else ""))
    train_augment = source.train_augment if augment else None
    if augment and source.singleton_unk > 0:  # train the unknown word on the words seen once
        if train_augment is not None:
            raise RuntimeError(f"dataset {name!r} has both an augmentation and singleton dropout; compose them")
        train_augment = singleton_dropout(train.x, source.singleton_unk)
        description += f"; words seen once in training are unknown with probability {source.singleton_unk:g} per batch"
    noisy_mask = None
    if label_noise > 0:
        if source.task != "classification" or source.num_classes is None:
            raise ConfigError(f"label_noise={label_noise} needs a classification dataset; {name!r} is {source.task}")
        noisy, noisy_mask = symmetric_label_noise(
            train.y, float(label_noise), source.num_classes, torch.Generator().manual_seed(noise_seed)
        )
        train = train.relabel(noisy)
    return Dataset(
        name=name,
        train=train,
        val=val,
        test=test,
        task=source.task,
        num_classes=source.num_classes,
        output_dim=source.output_dim,
        input_shape=input_shape,
        source=description,
        substitute_for=source.substitute_for,
        train_augment=train_augment,
        noisy_label_mask=noisy_mask,
    )
