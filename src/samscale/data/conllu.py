"""Universal Dependencies CoNLL-U files as (word forms, UPOS tags) per sentence.

A CoNLL-U file holds one token per line in 10 tab-separated columns (ID, FORM, LEMMA, UPOS, XPOS, FEATS, HEAD,
DEPREL, DEPS, MISC), sentences separated by blank lines, and `#` comment lines (sentence ids, text). Only syntactic
words are read: multi-word token lines (ID a range such as `3-4`, the surface token "don't" of the words "do" and
"n't") and empty nodes (ID a decimal such as `5.1`) carry no UPOS of their own and are skipped, as UD's own
evaluation does. Anything else that is not a well-formed word line is an error naming the file and line.
"""
from __future__ import annotations

import re
from pathlib import Path

UPOS_TAGS: tuple[str, ...] = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
                              "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")
"""The 17 universal part-of-speech tags in UD's (alphabetical) order; a tag's class index is its position here."""

COLUMNS = 10
_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_EMPTY_ID = re.compile(r"[0-9]+\.[1-9][0-9]*")

Sentence = tuple[list[str], list[str]]


def read_conllu(path: str | Path) -> list[Sentence]:
    """(forms, UPOS tags) of every sentence of a CoNLL-U file, words in order; ValueError naming file and line on
    malformed input (wrong column count, a bad ID, a word ID out of sequence, an unknown UPOS tag)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")  # FileNotFoundError names the path
    sentences: list[Sentence] = []
    forms: list[str] = []
    tags: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            if forms:
                sentences.append((forms, tags))
                forms, tags = [], []
            continue
        if line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) != COLUMNS:
            raise ValueError(f"{path}: line {number}: expected {COLUMNS} tab-separated columns, got {len(columns)}")
        token_id, form, upos = columns[0], columns[1], columns[3]
        if _RANGE_ID.fullmatch(token_id) or _EMPTY_ID.fullmatch(token_id):
            continue
        if not _WORD_ID.fullmatch(token_id):
            raise ValueError(f"{path}: line {number}: bad token ID {token_id!r} (expected 1, 2, …, a range such as "
                             "3-4, or an empty node such as 5.1)")
        if int(token_id) != len(forms) + 1:
            raise ValueError(f"{path}: line {number}: word ID {token_id} out of sequence (expected {len(forms) + 1}; "
                             "is a blank line missing between sentences?)")
        if upos not in UPOS_TAGS:
            raise ValueError(f"{path}: line {number}: unknown UPOS tag {upos!r}; valid: {', '.join(UPOS_TAGS)}")
        forms.append(form)
        tags.append(upos)
    if forms:
        sentences.append((forms, tags))
    return sentences
