"""Binary sentence sentiment: GLUE SST-2 from its TSV files, and a generated-lexicon stand-in that runs offline.

- `sst2`: GLUE's SST-2 folder (`train.tsv`, `dev.tsv`; header `sentence<TAB>label`, lower-cased tokenized text).
  GLUE hides the test labels, so the 872 `dev.tsv` sentences are the test split here and validation is carved from
  the 67,349 training sentences. Tokens are the whitespace-separated words; the vocabulary is the `max_vocab` most
  frequent training words that remain in the training split once validation is carved out.
- `sst2-standin`: SST-2 cannot be installed offline, so the cpu/smoke budgets use sentences generated from a seeded
  lexicon that keeps what makes SST-2 a sequence task rather than a bag of words: a few sentiment words (score ±1,
  ±2) among Zipf-distributed neutral filler, where a negator ("not", "never", "hardly") flips the sentiment word that
  follows it and an intensifier ("very", "really") doubles it; the label is the sign of the summed score (sentences
  scoring 0 are redrawn). Neutral words (8,000) and the 50 words of each sentiment class (±1, ±2) are
  Zipf-distributed, as word frequencies are; vocabulary and lengths (6–30 tokens) are of SST-2's order. Generated
  deterministically from `seed`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from samscale.data.dataset import SourceDataset
from samscale.data.errors import reading
from samscale.data.locate import Candidate, first_available
from samscale.data.options import non_negative_int, positive_int
from samscale.data.paths import dataset_dir
from samscale.data.split import Split
from samscale.data.text import SPECIALS, build_vocab, encode

NEGATORS = ("not", "never", "hardly")
INTENSIFIERS = ("very", "really")
SST2_FILES = ("train.tsv", "dev.tsv")


def read_sst2_tsv(path: str | Path) -> tuple[list[list[str]], list[int]]:
    """(token lists, 0/1 labels) of a GLUE SST-2 TSV file with a `sentence` and a `label` column."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")  # FileNotFoundError names the path
    reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    if not reader.fieldnames or not {"sentence", "label"} <= set(reader.fieldnames):
        raise ValueError(f"{path}: expected columns 'sentence' and 'label', got {reader.fieldnames}")
    sentences, labels = [], []
    with reading(path, "a GLUE SST-2 TSV file"):
        for line, row in enumerate(reader, start=2):
            if row["label"] not in ("0", "1"):
                raise ValueError(f"{path}: line {line}: label must be 0 or 1, got {row['label']!r}")
            if row["sentence"] is None:
                raise ValueError(f"{path}: line {line}: no sentence")
            sentences.append(row["sentence"].split())
            labels.append(int(row["label"]))
    return sentences, labels


def sentence_source(
    train: tuple[list[list[str]], list[int]], test: tuple[list[list[str]], list[int]], *, max_vocab: int,
    max_len: int, source: str, substitute_for: str | None = None,
) -> SourceDataset:
    """Tokenized labelled sentences as a 2-class SourceDataset of (N, max_len) padded id tensors.

    `input_shape` is the one-hot shape of one sentence, (max_len, vocabulary size): the inputs themselves are ids.
    Words are numbered over all of `train`; `load_dataset` keeps those of the training split left after validation is
    carved out (`SourceDataset.min_word_count` 1), so validation words do not leak into the vocabulary.
    """
    vocab = build_vocab(train[0], max_vocab)

    def split(part: tuple[list[list[str]], list[int]]) -> Split:
        return Split(encode(part[0], vocab, max_len), torch.tensor(part[1], dtype=torch.int64))

    return SourceDataset(
        train=split(train), test=split(test), task="classification", num_classes=2, output_dim=2,
        input_shape=(max_len, len(vocab) + len(SPECIALS)),
        source=f"{source}; vocabulary {len(vocab) + len(SPECIALS)} ids, max_len {max_len}",
        substitute_for=substitute_for, min_word_count=1,
    )


def build_sst2(*, root: str | None, download: bool, augment: bool, max_vocab: int = 10_000,
               max_len: int = 64) -> SourceDataset:
    """GLUE SST-2 from `train.tsv` and `dev.tsv` in the dataset folder (dev is the test split here)."""
    folder = dataset_dir("sst2", root)
    (train, test), where = first_available("sst2", [
        Candidate(str(folder), lambda: tuple(read_sst2_tsv(folder / name) for name in SST2_FILES)),
    ], fixes=[f"put GLUE's SST-2 train.tsv and dev.tsv in {folder} (or set $SAMSCALE_DATA)",
              "or use the offline stand-in dataset 'sst2-standin'"])
    return sentence_source(train, test, max_vocab=positive_int("max_vocab", max_vocab),
                           max_len=positive_int("max_len", max_len), source=f"GLUE SST-2 ({where}), dev.tsv as test")


def generate_sentiment(n: int, rng: np.random.Generator, neutral: int = 8000,
                       sentiment: int = 50) -> tuple[list[list[str]], list[int]]:
    """`n` generated sentences and labels (see the module docstring); deterministic in `rng`'s state."""
    cdf = np.cumsum(1.0 / np.arange(1, neutral + 1) ** 1.1)
    cdf /= cdf[-1]
    lexicon_cdf = np.cumsum(1.0 / np.arange(1, sentiment + 1))  # sentiment words: Zipf(1) within each class
    lexicon_cdf /= lexicon_cdf[-1]
    sentences, labels = [], []
    while len(sentences) < n:
        length = int(rng.integers(6, 31))
        filler = np.minimum(np.searchsorted(cdf, rng.random(length)), neutral - 1)  # Zipf(1.1) word ranks
        words = [f"w{i:04d}" for i in filler]
        score = 0
        for position in sorted(rng.choice(length - 1, size=int(rng.integers(1, 4)), replace=False), reverse=True):
            polarity, strength = (1 if rng.random() < 0.5 else -1), (2 if rng.random() < 0.3 else 1)
            rank = min(int(np.searchsorted(lexicon_cdf, rng.random())), sentiment - 1)
            word = f"{'pos' if polarity > 0 else 'neg'}{strength}_{rank:03d}"
            value = polarity * strength
            modifier = rng.random()
            if modifier < 0.25:
                words[position:position + 1] = [NEGATORS[int(rng.integers(len(NEGATORS)))], word]
                value = -value
            elif modifier < 0.4:
                words[position:position + 1] = [INTENSIFIERS[int(rng.integers(len(INTENSIFIERS)))], word]
                value = 2 * value
            else:
                words[position] = word
            score += value
        if score != 0:
            sentences.append(words)
            labels.append(int(score > 0))
    return sentences, labels


def build_sst2_standin(*, root: str | None, download: bool, augment: bool, seed: int = 0, num_train: int = 8000,
                       num_test: int = 1000, max_vocab: int = 10_000, max_len: int = 40) -> SourceDataset:
    """Generated-lexicon sentiment sentences standing in for SST-2 (module docstring); `root` is unused."""
    rng = np.random.default_rng(non_negative_int("seed", seed))
    train = generate_sentiment(positive_int("num_train", num_train), rng)
    test = generate_sentiment(positive_int("num_test", num_test), rng)
    source = (f"stand-in for SST-2: generated-lexicon sentiment with negation and intensifiers (seed {seed}, "
              f"{num_train} train / {num_test} test sentences)")
    return sentence_source(train, test, max_vocab=positive_int("max_vocab", max_vocab),
                           max_len=positive_int("max_len", max_len), source=source, substitute_for="sst2")
