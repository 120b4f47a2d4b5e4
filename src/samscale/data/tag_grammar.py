"""A seeded hidden-Markov grammar over the 17 UPOS tags: generates tagged sentences and decodes them optimally.

It stands in for an English treebank when none can be installed (dataset `pos-standin`, `samscale.data.pos`).
Tags follow a first-order Markov chain whose start, transition and end probabilities are hand-set from the tag
bigrams of written English (determiners and adjectives precede nouns, auxiliaries precede verbs, particles "to"
precede verbs, punctuation ends sentences, ...), with a small floor so that every bigram is possible. Each tag emits
a word from its own lexicon with Zipf frequencies: large open classes (nouns 14,000 words, proper nouns 9,000,
verbs and adjectives 5,000 each, ...) and small closed ones (12 conjunctions, 40 determiners, 20 punctuation marks,
...). About 1,100 words belong to two or three lexicons, as English "run" (NOUN/VERB), "that"
(DET/PRON/SCONJ), "back" (ADV/ADP/NOUN) or "well" (ADV/INTJ): frequent ones among the closed classes, hundreds
among the open ones, so the word alone does not settle the tag and a tagger must read the context. Everything
random (which words are shared, the word spellings) is drawn from the generator it is given.

Because the generating process is known, the best achievable token accuracy is known too: `posterior_tags` decodes
each token's most probable tag given the whole sentence (forward-backward), which no tagger can beat on average;
`viterbi_tags` gives the most probable tag sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samscale.data.conllu import UPOS_TAGS

START_WEIGHTS: dict[str, float] = {
    "PRON": 20, "DET": 12, "PROPN": 10, "NOUN": 8, "ADV": 7, "VERB": 7, "ADP": 6, "INTJ": 5, "AUX": 5, "SCONJ": 4,
    "CCONJ": 4, "ADJ": 4, "NUM": 3, "PUNCT": 3, "X": 1, "SYM": 1,
}
"""Relative frequencies of a sentence's first tag."""

TRANSITION_WEIGHTS: dict[str, dict[str, float]] = {
    "ADJ": {"NOUN": 55, "PUNCT": 15, "ADP": 7, "CCONJ": 6, "ADJ": 4, "PART": 4, "PROPN": 3, "SCONJ": 2, "VERB": 2,
            "END": 2},
    "ADP": {"DET": 40, "NOUN": 15, "PROPN": 12, "PRON": 12, "NUM": 6, "ADJ": 5, "VERB": 3, "ADV": 2, "ADP": 2,
            "SCONJ": 1},
    "ADV": {"PUNCT": 18, "VERB": 15, "ADJ": 15, "ADV": 8, "ADP": 8, "AUX": 6, "DET": 6, "PRON": 6, "SCONJ": 4,
            "NUM": 3, "NOUN": 3, "CCONJ": 2, "PART": 2, "END": 2},
    "AUX": {"VERB": 40, "PART": 12, "ADV": 10, "ADJ": 10, "DET": 8, "PRON": 7, "AUX": 5, "ADP": 3, "NOUN": 3,
            "PUNCT": 2},
    "CCONJ": {"PRON": 14, "VERB": 13, "DET": 13, "NOUN": 12, "ADJ": 8, "PROPN": 8, "ADV": 8, "AUX": 6, "ADP": 5,
              "NUM": 3, "SCONJ": 2, "PART": 2},
    "DET": {"NOUN": 62, "ADJ": 22, "PROPN": 5, "NUM": 3, "ADV": 3, "VERB": 2, "PRON": 1, "DET": 1},
    "INTJ": {"PUNCT": 60, "INTJ": 10, "PRON": 10, "PROPN": 5, "NOUN": 5, "DET": 5, "ADV": 5, "END": 5},
    "NOUN": {"PUNCT": 30, "ADP": 25, "NOUN": 8, "AUX": 8, "VERB": 7, "CCONJ": 7, "PRON": 3, "PART": 3, "ADV": 3,
             "SCONJ": 2, "DET": 2, "ADJ": 1, "NUM": 1, "END": 3},
    "NUM": {"NOUN": 40, "PUNCT": 20, "NUM": 8, "ADP": 8, "SYM": 5, "PROPN": 5, "CCONJ": 4, "ADJ": 3, "X": 2, "END": 3},
    "PART": {"VERB": 65, "NOUN": 8, "ADV": 6, "ADJ": 6, "DET": 4, "PUNCT": 4, "AUX": 3, "PROPN": 2, "ADP": 2},
    "PRON": {"VERB": 35, "AUX": 25, "NOUN": 8, "PUNCT": 8, "ADV": 5, "ADP": 5, "ADJ": 2, "PRON": 2, "CCONJ": 2,
             "PART": 2, "DET": 1},
    "PROPN": {"PROPN": 30, "PUNCT": 25, "ADP": 10, "VERB": 8, "AUX": 6, "NOUN": 5, "CCONJ": 5, "PART": 4, "NUM": 3,
              "END": 4},
    "PUNCT": {"END": 45, "PRON": 10, "DET": 8, "PROPN": 8, "CCONJ": 8, "PUNCT": 8, "NOUN": 7, "VERB": 6, "ADV": 5,
              "ADP": 4, "SCONJ": 4, "NUM": 4, "ADJ": 3, "AUX": 3, "INTJ": 2, "X": 1, "SYM": 1},
    "SCONJ": {"PRON": 35, "DET": 15, "PROPN": 8, "NOUN": 8, "VERB": 7, "ADV": 6, "AUX": 5, "ADJ": 4, "ADP": 3,
              "NUM": 2, "PART": 2},
    "SYM": {"NUM": 40, "NOUN": 15, "PUNCT": 15, "PROPN": 10, "SYM": 5, "X": 5, "DET": 5, "ADJ": 5, "END": 5},
    "VERB": {"DET": 20, "ADP": 14, "PRON": 14, "PUNCT": 12, "ADV": 7, "NOUN": 7, "PART": 6, "ADJ": 5, "SCONJ": 4,
             "PROPN": 4, "VERB": 2, "NUM": 2, "CCONJ": 2, "AUX": 1, "END": 1},
    "X": {"X": 30, "PUNCT": 30, "NOUN": 10, "PROPN": 10, "NUM": 5, "ADP": 5, "VERB": 5, "SYM": 5, "END": 5},
}
"""Relative frequencies of the next tag (or "END") after each tag."""

FLOOR = 0.002
"""Probability mass spread evenly over all next tags (and END) of every row, so that no bigram is impossible."""

LEXICONS: dict[str, tuple[int, float]] = {
    "NOUN": (14000, 0.85), "PROPN": (9000, 0.7), "VERB": (5000, 0.95), "ADJ": (5000, 0.85), "ADV": (900, 1.05),
    "NUM": (1500, 0.7), "X": (600, 0.7), "INTJ": (60, 1.3), "SYM": (40, 1.3), "ADP": (70, 1.3), "PRON": (60, 1.4),
    "DET": (40, 1.6), "AUX": (30, 1.4), "SCONJ": (35, 1.4), "CCONJ": (12, 1.8), "PART": (12, 1.8),
    "PUNCT": (20, 1.5),
}
"""Each tag's lexicon: (number of words, Zipf exponent s of its word frequencies ∝ 1/rank^s)."""

SHARED_WORDS: tuple[tuple[str, str, int, int], ...] = (
    # (tag a, tag b, words shared, drawn among the top ranks of both lexicons)
    ("NOUN", "VERB", 600, 2000), ("ADJ", "NOUN", 200, 1500), ("VERB", "ADJ", 200, 1500), ("PROPN", "NOUN", 200, 3000),
    ("ADV", "ADJ", 60, 300), ("ADP", "ADV", 15, 30), ("ADP", "SCONJ", 10, 20), ("DET", "PRON", 8, 12),
    ("DET", "SCONJ", 3, 6), ("ADP", "PART", 3, 6), ("AUX", "VERB", 10, 30), ("NUM", "PRON", 2, 4),
    ("CCONJ", "ADV", 3, 6), ("INTJ", "ADV", 5, 10), ("X", "PROPN", 30, 200), ("SYM", "PUNCT", 5, 10),
    ("ADV", "NOUN", 30, 300), ("PRON", "SCONJ", 3, 6),
)
"""Word types in two lexicons: each shared word takes a slot among the top ranks of both tags' lexicons."""


@dataclass(frozen=True)
class TagGrammar:
    """A hidden-Markov model over UPOS tags: start (T,), transition (T, T), end (T,) and emission (T, W) probabilities
    (each row of [transition | end] sums to 1), and the spelling of each of the W word ids."""

    start: np.ndarray
    transition: np.ndarray
    end: np.ndarray
    emission: np.ndarray
    words: tuple[str, ...]

    def sample(self, n: int, rng: np.random.Generator, max_len: int) -> list[tuple[list[int], list[int]]]:
        """`n` sentences as (word ids, tag ids), each of 1 to `max_len` tokens (longer ones are drawn again)."""
        tags_count = len(self.start)
        chain = np.concatenate([self.transition, self.end[:, None]], axis=1).cumsum(axis=1)
        chain /= chain[:, -1:]
        start = self.start.cumsum() / self.start.sum()
        emit = self.emission.cumsum(axis=1)
        emit /= emit[:, -1:]
        sentences: list[list[int]] = []
        while len(sentences) < n:
            tags = [int(np.searchsorted(start, rng.random(), side="right"))]
            while tags[-1] < tags_count and len(tags) <= max_len:
                tags.append(int(np.searchsorted(chain[tags[-1]], rng.random(), side="right")))
            if tags[-1] == tags_count:  # reached END within max_len tokens
                sentences.append(tags[:-1])
        out = []
        for tags in sentences:
            draws = rng.random(len(tags))
            words = [min(int(np.searchsorted(emit[t], u, side="right")), emit.shape[1] - 1)
                     for t, u in zip(tags, draws)]
            out.append((words, tags))
        return out

    def _scaled_forward_backward(self, words: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Scaled forward and backward messages (L, T) of one sentence of word ids."""
        likelihood = self.emission[:, words].T  # (L, T)
        length = len(words)
        alpha = np.empty_like(likelihood)
        beta = np.empty_like(likelihood)
        alpha[0] = self.start * likelihood[0]
        alpha[0] /= alpha[0].sum()
        for i in range(1, length):
            alpha[i] = (alpha[i - 1] @ self.transition) * likelihood[i]
            alpha[i] /= alpha[i].sum()
        beta[-1] = self.end / self.end.sum()
        for i in range(length - 2, -1, -1):
            beta[i] = self.transition @ (likelihood[i + 1] * beta[i + 1])
            beta[i] /= beta[i].sum()
        return alpha, beta

    def posterior_tags(self, words: list[int]) -> list[int]:
        """Each token's most probable tag given the whole sentence (maximizes the expected token accuracy)."""
        alpha, beta = self._scaled_forward_backward(words)
        return [int(t) for t in (alpha * beta).argmax(axis=1)]

    def viterbi_tags(self, words: list[int]) -> list[int]:
        """The most probable tag sequence of the sentence (ends included)."""
        with np.errstate(divide="ignore"):
            log_emit = np.log(self.emission[:, words].T)
            log_trans, log_end = np.log(self.transition), np.log(self.end)
            score = np.log(self.start) + log_emit[0]
        back = []
        for i in range(1, len(words)):
            candidates = score[:, None] + log_trans
            back.append(candidates.argmax(axis=0))
            score = candidates.max(axis=0) + log_emit[i]
        best = [int((score + log_end).argmax())]
        for pointers in reversed(back):
            best.append(int(pointers[best[-1]]))
        return best[::-1]


def _row(weights: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    row = np.array([weights.get(name, 0.0) for name in names], dtype=np.float64)
    return (1 - FLOOR) * row / row.sum() + FLOOR / len(names)


def make_grammar(rng: np.random.Generator) -> TagGrammar:
    """The grammar of the module docstring; which words are shared and how words are spelled come from `rng`."""
    names = UPOS_TAGS + ("END",)
    start = _row(START_WEIGHTS, UPOS_TAGS)
    rows = np.stack([_row(TRANSITION_WEIGHTS[tag], names) for tag in UPOS_TAGS])
    lexicon = {}
    next_id = 0
    for tag in UPOS_TAGS:
        size = LEXICONS[tag][0]
        lexicon[tag] = np.arange(next_id, next_id + size)
        next_id += size
    for tag_a, tag_b, count, top in SHARED_WORDS:
        # a shared word keeps its rank in a's lexicon and replaces a word of b's at a rank drawn among b's top ones
        ranks_a = rng.choice(min(top, LEXICONS[tag_a][0]), size=count, replace=False)
        ranks_b = rng.choice(min(top, LEXICONS[tag_b][0]), size=count, replace=False)
        lexicon[tag_b][ranks_b] = lexicon[tag_a][ranks_a]
    used = np.unique(np.concatenate(list(lexicon.values())))
    renumber = np.full(next_id, -1)
    renumber[used] = rng.permutation(len(used))  # spellings carry no trace of the tag or the rank
    emission = np.zeros((len(UPOS_TAGS), len(used)))
    for index, tag in enumerate(UPOS_TAGS):
        size, exponent = LEXICONS[tag]
        np.add.at(emission[index], renumber[lexicon[tag]], 1.0 / np.arange(1, size + 1) ** exponent)
        emission[index] /= emission[index].sum()
    words = tuple(f"w{i:05d}" for i in range(len(used)))
    return TagGrammar(start=start, transition=rows[:, :-1], end=rows[:, -1], emission=emission, words=words)
