"""LSTM sentence classifier (SST-2 panel): embedding → one LSTM layer → last real step's hidden state → Linear.

Inputs are (batch, length) int64 token ids, right-padded with id 0 (`samscale.data.text.PAD`); each sentence's
representation is the LSTM's hidden state after its last real token (packed sequences, so padding never enters).
The width h is both the embedding and the hidden size; parameters: V·h (embedding) + 4(2h² + 2h) (LSTM, torch's two
bias vectors) + (h + 1)·classes. Embedding and LSTM use torch's default distributions (N(0, 1); U(±1/√h)), the head
Flax's; all drawn from the given generator (or torch's global RNG).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from samscale.models.init import flax_init_, require_positive_int


class LSTMClassifier(nn.Module):
    """Embedding(vocab, h, padding 0) → LSTM(h, h) → hidden state at each sentence's end → Linear(h, classes)."""

    def __init__(self, width: int, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.lstm = nn.LSTM(width, width, batch_first=True)
        self.head = nn.Linear(width, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.int64:
            raise ValueError(f"LSTMClassifier expects (batch, length) int64 token ids, got {tuple(tokens.shape)} "
                             f"{tokens.dtype}")
        lengths = (tokens != 0).sum(dim=1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return self.head(hidden[-1])


def _checked(width: int, vocab_size: int, num_classes: int) -> None:
    for name, value in (("width", width), ("vocab_size", vocab_size), ("num_classes", num_classes)):
        require_positive_int(name, value)


def lstm_classifier(
    width: int = 128, vocab_size: int = 10_002, num_classes: int = 2, *, generator: torch.Generator | None = None
) -> LSTMClassifier:
    """Build an LSTM classifier of hidden and embedding `width` over `vocab_size` token ids (0 = padding)."""
    _checked(width, vocab_size, num_classes)
    model = LSTMClassifier(width, vocab_size, num_classes)
    with torch.no_grad():  # torch's default distributions, drawn from `generator`
        nn.init.normal_(model.embed.weight, generator=generator)
        model.embed.weight[0].zero_()
        bound = width ** -0.5
        for parameter in model.lstm.parameters():
            nn.init.uniform_(parameter, -bound, bound, generator=generator)
    flax_init_(model.head, generator)
    return model


def lstm_param_count(width: int = 128, vocab_size: int = 10_002, num_classes: int = 2) -> int:
    """Number of parameters of `lstm_classifier(width, vocab_size, num_classes)`, without building it."""
    _checked(width, vocab_size, num_classes)
    return vocab_size * width + 4 * (2 * width * width + 2 * width) + (width + 1) * num_classes
