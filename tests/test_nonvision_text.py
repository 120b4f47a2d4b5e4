"""The LSTM family, SST-2 TSV reading, vocabularies and the generated sentiment stand-in, against hand computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samscale.data import load_dataset
from samscale.data.errors import DatasetUnavailable
from samscale.data.sst2 import INTENSIFIERS, NEGATORS, build_sst2, generate_sentiment, read_sst2_tsv
from samscale.data.text import PAD, UNK, build_vocab, encode
from samscale.models.registry import build_model, count_params, describe_ladder, param_count


def test_lstm_closed_form_count_matches_the_built_module():
    for width, shape in [(48, (64, 10_002)), (5, (7, 30))]:
        model = build_model("lstm", width, input_shape=shape, num_classes=2)
        assert count_params(model) == param_count("lstm", width, input_shape=shape, num_classes=2)
    # by hand at width 2, vocabulary 5, 2 classes: embedding 10, LSTM 4·(2·2 + 2·2 + 2·2) = 48, head 6
    assert param_count("lstm", 2, input_shape=(3, 5), num_classes=2) == 10 + 48 + 6
    counts = [row["n_params"] for row in describe_ladder("lstm")]
    assert counts[0] == pytest.approx(0.5e6, rel=0.01) and 14e6 <= counts[-1] <= 15e6  # the paper's 0.5M–15M


def test_lstm_reads_each_sentence_up_to_its_last_token():
    model = build_model("lstm", 6, input_shape=(5, 20), num_classes=2, generator=torch.Generator().manual_seed(0))
    padded = torch.tensor([[3, 4, 5, 0, 0], [7, 8, 0, 0, 0]])
    out = model(padded)
    for row, length in ((0, 3), (1, 2)):  # oracle: the same sentence alone, unpadded, through nn.LSTM directly
        tokens = padded[row, :length].unsqueeze(0)
        _, (hidden, _) = model.lstm(model.embed(tokens))
        torch.testing.assert_close(out[row], model.head(hidden[-1])[0])
    twin = build_model("lstm", 6, input_shape=(5, 20), num_classes=2, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))  # seeded by the generator


def test_vocab_and_encoding_by_hand():
    vocab = build_vocab([["b", "a", "b"], ["c", "a", "b"]], max_size=2)
    assert vocab == {"b": 2, "a": 3}  # counts b:3, a:2, c:1; ids after pad and unknown
    ids = encode([["a", "c", "b"], ["b"]], vocab, max_len=2)
    assert ids.tolist() == [[3, UNK], [2, PAD]]


def test_sst2_tsv_reader_and_loader(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nit 's a charming journey \t1\na dull mess \t0\n"
                                        "charming \t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nnot charming \t0\n")
    sentences, labels = read_sst2_tsv(tmp_path / "train.tsv")
    assert sentences[0] == ["it", "'s", "a", "charming", "journey"] and labels == [1, 0, 1]
    source = build_sst2(root=str(tmp_path), download=False, augment=False, max_len=4)
    assert source.input_shape == (4, 2 + 7)  # 7 distinct training words
    charming = source.train.x[2, 0].item()
    assert source.test.x.tolist() == [[UNK, charming, PAD, PAD]] and source.test.y.tolist() == [0]
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\ngood \t2\n")
    with pytest.raises(ValueError, match="line 2: label must be 0 or 1, got '2'"):
        read_sst2_tsv(tmp_path / "bad.tsv")
    with pytest.raises(DatasetUnavailable, match="sst2-standin"):
        build_sst2(root=str(tmp_path / "missing"), download=False, augment=False)


def _score(words: list[str]) -> int:
    """Independent re-scoring of a generated sentence from its words alone."""
    total, factor = 0, 1
    for word in words:
        if word in NEGATORS:
            factor = -1
        elif word in INTENSIFIERS:
            factor = 2
        elif word.startswith(("pos", "neg")):
            polarity = 1 if word.startswith("pos") else -1
            total += factor * polarity * int(word[3])
            factor = 1
    return total


def test_generated_sentiment_labels_follow_the_lexicon_rules():
    sentences, labels = generate_sentiment(300, np.random.default_rng(5))
    assert [int(_score(s) > 0) for s in sentences] == labels and all(_score(s) != 0 for s in sentences)
    assert 0.4 < np.mean(labels) < 0.6
    assert any(w in NEGATORS for s in sentences for w in s)
    data = load_dataset("sst2-standin", val_size=100, num_train=600, num_test=100)
    again = load_dataset("sst2-standin", val_size=100, num_train=600, num_test=100)
    assert torch.equal(data.train.x, again.train.x) and data.substitute_for == "sst2"
    assert (len(data.train), len(data.val), len(data.test)) == (500, 100, 100)


def test_sst2_lstm_smoke_spec_trains():
    from samscale.recipes import RECIPES
    from samscale.train.loop import dataset_for, train_run

    specs = RECIPES["sst2-lstm"].study("smoke").expand()
    assert {s.data.name for s in specs} == {"sst2-standin"} and len(specs) == 4
    spec = next(s for s in specs if s.optim.name == "sam" and s.model.size == 48)
    spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"threads": 1})})
    result = train_run(spec)
    assert result.status == "complete" and 0.0 <= result.final["final_test_acc"] <= 1.0
    assert result.final["n_params"] == param_count("lstm", 48, input_shape=dataset_for(spec).input_shape,
                                                   num_classes=2)
