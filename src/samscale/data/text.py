"""Token vocabularies and padded id tensors for text tasks: id 0 pads, id 1 is the unknown word; per-token labels
pad with IGNORE_LABEL."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

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
