"""Token vocabularies and padded id tensors for text tasks: id 0 pads, id 1 is the unknown word; per-token labels
pad with IGNORE_LABEL.

A source numbers the words of its whole official training set (`build_vocab`, `encode`); once validation is carved
out, `restrict_vocabulary` cuts that numbering to the words of the training split, so that neither validation nor test
words leak into the vocabulary, and maps the rare ones to the unknown id, so that the unknown word's embedding is
trained on them and meets validation and test words it has never seen the way it met them in training.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from samscale.data.options import positive_int

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
IGNORE_LABEL = -100
"""The per-token target of padding positions: losses and accuracies skip it (torch's cross-entropy default)."""


def build_vocab(sentences: Iterable[Sequence[str]], max_size: int, min_count: int = 1) -> dict[str, int]:
    """Word -> id for the `max_size` most frequent words seen at least `min_count` times (ties: alphabetical),
    numbered from 2 after the padding and unknown ids."""
    max_size, min_count = positive_int("max_vocab", max_size), positive_int("min_count", min_count)
    counts = Counter(word for sentence in sentences for word in sentence)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))[:max_size]
    return {word: index for index, word in enumerate(ranked, start=len(SPECIALS))}


def restrict_vocabulary(train: Tensor, others: Sequence[Tensor], min_count: int) -> tuple[Tensor, list[Tensor], int]:
    """(train, others, size): id tensors renumbered to the words seen at least `min_count` times in `train`.

    Every other word id, in `train` and in each of `others`, becomes UNK; PAD and UNK keep their ids; kept words keep
    their order (so a frequency-ranked numbering stays ranked) and are numbered from 2 without gaps. `size` is the new
    vocabulary size including the special ids. With `min_count` 1 only words absent from `train` become unknown; with
    2, the words seen once in training become unknown too, so UNK occurs in training and its embedding is trained.
    """
    min_count = positive_int("min_count", min_count)
    largest = max([int(train.max()) if train.numel() else 0] + [int(t.max()) for t in others if t.numel()])
    counts = torch.bincount(train.flatten(), minlength=largest + 1)
    kept = counts >= min_count
    kept[: len(SPECIALS)] = False
    mapping = torch.full((largest + 1,), UNK, dtype=torch.int64)
    mapping[PAD] = PAD
    words = kept.nonzero().flatten()
    mapping[words] = torch.arange(len(SPECIALS), len(SPECIALS) + len(words), dtype=torch.int64)
    return mapping[train], [mapping[t] for t in others], len(SPECIALS) + len(words)


def singleton_dropout(train: Tensor, rate: float) -> Callable[[Tensor, torch.Generator], Tensor]:
    """A training-batch augmentation: each token of a word seen exactly once in `train` becomes UNK with probability
    `rate`, independently per token and batch, drawn from the loader's generator (deterministic under the run's seed).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"the singleton dropout rate must be a probability in [0, 1], got {rate!r}")
    once = torch.bincount(train.flatten()) == 1
    once[: len(SPECIALS)] = False

    def drop(ids: Tensor, generator: torch.Generator) -> Tensor:
        rare = once[ids.clamp_max(len(once) - 1)] & (ids < len(once))
        hit = torch.rand(ids.shape, generator=generator, device=generator.device).to(ids.device) < rate
        return torch.where(rare & hit, torch.full_like(ids, UNK), ids)

    return drop


def encode(sentences: Sequence[Sequence[str]], vocab: dict[str, int], max_len: int) -> Tensor:
    """(N, max_len) int64 ids, right-padded with PAD, truncated after `max_len` tokens; unknown words map to UNK."""
    max_len = positive_int("max_len", max_len)
    out = torch.zeros(len(sentences), max_len, dtype=torch.int64)
    for row, sentence in enumerate(sentences):
        ids = [vocab.get(word, UNK) for word in sentence[:max_len]]
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def encode_labels(labels: Sequence[Sequence[int]], max_len: int) -> Tensor:
    """(N, max_len) int64 per-token labels aligned with `encode`: right-padded with IGNORE_LABEL, truncated after
    `max_len` tokens."""
    max_len = positive_int("max_len", max_len)
    out = torch.full((len(labels), max_len), IGNORE_LABEL, dtype=torch.int64)
    for row, sequence in enumerate(labels):
        out[row, : min(len(sequence), max_len)] = torch.tensor(list(sequence[:max_len]), dtype=torch.int64)
    return out
