"""What `load_dataset` returns (Dataset) and what each source provides before the shared protocol (SourceDataset)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from samscale.data.split import LabelledSplit, Split

#: A batch-level training augmentation: (inputs, generator) -> augmented inputs of the same shape.
Augmentation = Callable[[Tensor, torch.Generator], Tensor]
Task = Literal["classification", "regression", "tagging", "multilabel"]
"""What a target is: one class per example, real-valued outputs, one class per token ("tagging": targets are
(N, L) int64 labels, padding positions set to `samscale.data.text.IGNORE_LABEL`), or several binary tasks per example
("multilabel": targets are (N, T) float32 in {0, 1}, NaN where an example has no label for a task; scored by average
precision, see `samscale.train.metrics`)."""

ACCURACY_TASKS: tuple[str, ...] = ("classification", "tagging")
"""Tasks scored by accuracy (of examples, or of real tokens) and selected on validation accuracy."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/validation/test splits, preprocessed and ready to batch, with what a model and a report need to know.

    `val` is carved from the official training set (seeded), or is the source's official validation split when it
    has one (`SourceDataset.val`); `test` is the official test set. `source` says where
    the data came from; `substitute_for` names the dataset this one stands in for, if any. `noisy_label_mask` marks
    the training examples whose label was replaced (its mean is the realized noise rate). For "imagenet" the three
    splits are lazily loaded `ImageFolderSplit`s (batch them with `make_loader`), not in-memory Splits.
    """

    name: str
    train: Split
    val: Split
    test: Split
    task: Task
    num_classes: int | None
    output_dim: int
    input_shape: tuple[int, ...]
    source: str
    substitute_for: str | None = None
    train_augment: Augmentation | None = None
    noisy_label_mask: Tensor | None = None


@dataclass(frozen=True, eq=False)
class SourceDataset:
    """A source's official train and test splits and metadata, before validation carving, subsetting and noise.

    `val` is the source's official validation split, for benchmarks whose validation set is part of their definition
    (OGB's scaffold split keeps validation molecules' scaffolds out of training, which a random carve would not);
    `load_dataset` then uses it and carves nothing. None (most sources): validation is carved from `train`.

    `min_word_count` (text sources, whose inputs are word ids of a vocabulary numbered over the whole official training
    set, last dim of `input_shape` = its size): once validation is carved, `load_dataset` keeps only the words seen at
    least this often in the training split and maps all others, in every split, to the unknown id
    (`samscale.data.text.restrict_vocabulary`). None: inputs are not word ids. `singleton_unk` (text sources): with
    augmentation on, each training token of a word seen once in the training split becomes the unknown id with this
    probability, afresh in every batch (`samscale.data.text.singleton_dropout`), which trains the unknown word.
    """

    train: LabelledSplit
    test: LabelledSplit
    task: Task
    num_classes: int | None
    output_dim: int
    input_shape: tuple[int, ...]
    source: str
    substitute_for: str | None = None
    train_augment: Augmentation | None = None
    val: LabelledSplit | None = None
    min_word_count: int | None = None
    singleton_unk: float = 0.0
