"""Per-token tagging: token-weighted loss and accuracy, CoNLL-U reading, the UD and hidden-Markov POS datasets, the
Transformer tagger family and the pos-transformer recipe, against hand computations and brute-force oracles."""
from __future__ import annotations

import itertools
from collections import Counter
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from samscale.data import load_dataset
from samscale.data.conllu import UPOS_TAGS, read_conllu
from samscale.data.errors import ConfigError, DatasetUnavailable
from samscale.data.pos import build_pos, most_frequent_tag_accuracy
from samscale.data.tag_grammar import TagGrammar, make_grammar
from samscale.data.text import IGNORE_LABEL, PAD, UNK
from samscale.models.registry import build_model, count_params, describe_ladder, param_count
from samscale.spec.run import build_spec
from samscale.sweep.ensemble import plan_packs
from samscale.train.ensemble import unpackable_reason
from samscale.train.loop import loss_function
from samscale.train.metrics import EpochMeter, evaluate, infer_task

# -- token-weighted loss and accuracy --------------------------------------------------------------------------------

# batch A: sentence 0 has 2 real tokens, sentence 1 has 1; padding logits would be "right" or confident if counted
LOGITS_A = torch.tensor([[[2.0, 0, 0], [0, 1, 0], [5, 0, 0]],
                         [[0.0, 0, 0], [0, 9, 0], [0, 9, 0]]])
TARGETS_A = torch.tensor([[0, 2, IGNORE_LABEL], [1, IGNORE_LABEL, IGNORE_LABEL]])
# batch B: one sentence of one real token, predicted right
LOGITS_B = torch.tensor([[[0.0, 0, 3], [7, 0, 0], [7, 0, 0]]])
TARGETS_B = torch.tensor([[2, IGNORE_LABEL, IGNORE_LABEL]])

# by hand: cross-entropy log Σ exp(z) − z_target of each real token
TOKEN_LOSSES_A = [math.log(math.e ** 2 + 2) - 2, math.log(math.e + 2), math.log(3)]  # argmax 0 ✓, 1 ✗, 0 ✗
TOKEN_LOSS_B = math.log(2 + math.e ** 3) - 3  # argmax 2 ✓


def test_token_loss_and_accuracy_of_a_padded_batch_by_hand():
    loss_fn = loss_function(SimpleNamespace(task="tagging"))
    loss_a = loss_fn(LOGITS_A, TARGETS_A)
    assert loss_a.item() == pytest.approx(sum(TOKEN_LOSSES_A) / 3, rel=1e-6)  # mean over 3 real tokens
    meter = EpochMeter("tagging")
    meter.update(loss_a, LOGITS_A, TARGETS_A)
    meter.update(loss_fn(LOGITS_B, TARGETS_B), LOGITS_B, TARGETS_B)
    result = meter.result("train_")
    # weighted by real tokens (3 and 1), not by sentences (2 and 1)
    assert result["train_loss"] == pytest.approx((sum(TOKEN_LOSSES_A) + TOKEN_LOSS_B) / 4, rel=1e-6)
    assert result["train_acc"] == pytest.approx(2 / 4)


class _Bank(nn.Module):
    """A fixed 'model': input row i (its first id) returns the stored logits of sentence i."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0]]


def test_evaluate_weights_tokens_with_the_task_given_or_read_from_shapes():
    bank = _Bank(torch.cat([LOGITS_A, LOGITS_B]))
    batches = [(torch.tensor([[0], [1]]), TARGETS_A), (torch.tensor([[2]]), TARGETS_B)]
    expected = {"test_loss": pytest.approx((sum(TOKEN_LOSSES_A) + TOKEN_LOSS_B) / 4, rel=1e-6), "test_acc": 0.5}
    loss_fn = loss_function(SimpleNamespace(task="tagging"))
    assert evaluate(bank, batches, loss_fn, prefix="test_", task="tagging") == expected
    assert evaluate(bank, batches, loss_fn, prefix="test_") == expected  # (N, L) targets, (N, L, C) outputs
    assert infer_task(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)) == "classification"
    assert infer_task(torch.zeros(4, 1), torch.zeros(4)) == "regression"
    with pytest.raises(ValueError, match="cannot tell the task"):
        infer_task(torch.zeros(4, 3), torch.zeros(4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        EpochMeter("segmentation")


# -- CoNLL-U and the UD dataset --------------------------------------------------------------------------------------

def _line(*columns: str) -> str:
    return "\t".join(columns) + "\n"


def _word(i: str, form: str, upos: str) -> str:
    return _line(i, form, form.lower(), upos, "_", "_", "0", "dep", "_", "_")


SENTENCE_1 = ("# sent_id = a\n# text = I don't run.\n" + _word("1", "I", "PRON")
              + _line("2-3", "don't", *["_"] * 8) + _word("2", "do", "AUX") + _word("3", "n't", "PART")
              + _word("4", "run", "VERB") + _word("4.1", "ran", "VERB") + _word("5", ".", "PUNCT"))
SENTENCE_2 = "# sent_id = b\n" + _word("1", "Run", "NOUN") + _word("2", "!", "PUNCT")


def test_conllu_reader_skips_comments_multiword_tokens_and_empty_nodes(tmp_path):
    path = tmp_path / "x.conllu"
    path.write_text(SENTENCE_1 + "\n" + SENTENCE_2)  # no blank line after the last sentence
    assert read_conllu(path) == [(["I", "do", "n't", "run", "."], ["PRON", "AUX", "PART", "VERB", "PUNCT"]),
                                 (["Run", "!"], ["NOUN", "PUNCT"])]
    assert len(UPOS_TAGS) == 17 and list(UPOS_TAGS) == sorted(UPOS_TAGS)


@pytest.mark.parametrize("text, message", [
    (_word("1", "a", "DET") + "2\tdog\tdog\tNOUN\n", "line 2: expected 10 tab-separated columns, got 4"),
    (_word("1", "a", "DET") + _word("2", "dog", "NOUNS"), "line 2: unknown UPOS tag 'NOUNS'"),
    ("# c\n" + _word("1", "a", "DET") + _word("3", "dog", "NOUN"), "line 3: word ID 3 out of sequence"),
    (_word("x", "a", "DET"), "line 1: bad token ID 'x'"),
])
def test_conllu_reader_names_file_and_line_of_malformed_input(tmp_path, text, message):
    path = tmp_path / "bad.conllu"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"bad.conllu: {message}"):
        read_conllu(path)


def test_pos_dataset_reads_a_treebank_folder(tmp_path):
    (tmp_path / "xx_t-ud-train.conllu").write_text(SENTENCE_1 + "\n" + SENTENCE_2 + "\n")
    (tmp_path / "xx_t-ud-test.conllu").write_text(_word("1", "run", "VERB") + _word("2", "zebra", "NOUN")
                                                 + _word("3", ".", "PUNCT") + _word("4", "I", "PRON")
                                                 + _word("5", "do", "AUX") + "\n")
    source = build_pos(root=str(tmp_path), download=False, augment=False, max_len=4)
    tag = {name: index for index, name in enumerate(UPOS_TAGS)}
    assert source.task == "tagging" and source.num_classes == source.output_dim == 17
    assert source.input_shape == (4, 2 + 7)  # I do n't run . Run !
    x, y = source.train.x, source.train.y
    assert y.tolist() == [[tag["PRON"], tag["AUX"], tag["PART"], tag["VERB"]],  # "." cut at max_len 4
                          [tag["NOUN"], tag["PUNCT"], IGNORE_LABEL, IGNORE_LABEL]]
    assert x[1, 2:].tolist() == [PAD, PAD] and x[0, 3].item() != x[1, 0].item()  # "run" ≠ "Run": forms as written
    assert source.test.x[0, 0].item() == x[0, 3].item() and source.test.x[0, 1].item() == UNK  # zebra unseen
    assert "1 test tokens beyond max_len not scored" in source.source
    folded = build_pos(root=str(tmp_path), download=False, augment=False, max_len=4, lowercase=True)
    assert folded.input_shape == (4, 2 + 6) and folded.train.x[0, 3].item() == folded.train.x[1, 0].item()
    with pytest.raises(DatasetUnavailable, match="pos-standin"):
        build_pos(root=str(tmp_path / "missing"), download=False, augment=False)
    (tmp_path / "yy_t-ud-train.conllu").write_text(SENTENCE_2)
    with pytest.raises(DatasetUnavailable, match="several \\*-ud-train.conllu files"):
        build_pos(root=str(tmp_path), download=False, augment=False)


# -- the hidden-Markov stand-in ----------------------------------------------------------------------------------------

def _tiny_grammar() -> TagGrammar:
    start = np.array([0.5, 0.3, 0.2])
    rows = np.array([[0.1, 0.5, 0.2, 0.2], [0.3, 0.1, 0.4, 0.2], [0.4, 0.3, 0.1, 0.2]])  # last column: END
    emission = np.array([[0.5, 0.3, 0.2, 0.0], [0.0, 0.4, 0.4, 0.2], [0.3, 0.0, 0.3, 0.4]])
    return TagGrammar(start, rows[:, :3], rows[:, 3], emission, ("a", "b", "c", "d"))


def test_posterior_and_viterbi_decoding_equal_brute_force_enumeration():
    grammar = _tiny_grammar()
    for words in ([0, 1, 2, 3], [2, 2, 1], [1]):
        joint = {}
        for tags in itertools.product(range(3), repeat=len(words)):
            p = grammar.start[tags[0]] * grammar.end[tags[-1]]
            p *= np.prod([grammar.emission[t, w] for t, w in zip(tags, words)])
            p *= np.prod([grammar.transition[a, b] for a, b in zip(tags, tags[1:])])
            joint[tags] = p
        marginals = np.zeros((len(words), 3))
        for tags, p in joint.items():
            marginals[np.arange(len(words)), list(tags)] += p
        assert grammar.posterior_tags(words) == marginals.argmax(axis=1).tolist()
        assert tuple(grammar.viterbi_tags(words)) == max(joint, key=joint.get)


def test_generated_grammar_is_a_proper_hmm_with_ambiguous_words():
    grammar = make_grammar(np.random.default_rng(0))
    rows = np.concatenate([grammar.transition, grammar.end[:, None]], axis=1)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    np.testing.assert_allclose(grammar.emission.sum(axis=1), 1.0)
    assert grammar.start.sum() == pytest.approx(1.0) and grammar.emission.shape == (17, len(grammar.words))
    tags_of_word = (grammar.emission > 0).sum(axis=0)
    noun, verb = UPOS_TAGS.index("NOUN"), UPOS_TAGS.index("VERB")
    # 600 NOUN/VERB words are shared, less the few whose slot a later pair takes over ("run", "work", ...)
    assert ((grammar.emission[noun] > 0) & (grammar.emission[verb] > 0)).sum() >= 450
    assert 1_000 < (tags_of_word > 1).sum() < len(grammar.words) / 10
    sentences = grammar.sample(300, np.random.default_rng(1), max_len=30)
    assert all(1 <= len(words) == len(tags) <= 30 for words, tags in sentences)
    assert all(grammar.emission[t, w] > 0 for words, tags in sentences for w, t in zip(words, tags))


def test_most_frequent_tag_baseline_by_hand():
    train = [(["a", "b"], [0, 1]), (["a", "c"], [0, 2]), (["a"], [1])]  # a → 0 (2 vs 1); tags 0 and 1 tie → 0
    assert most_frequent_tag_accuracy(train, [(["a", "b", "d"], [1, 1, 0])]) == pytest.approx(2 / 3)


def test_standin_needs_context_and_loads_deterministically():
    rng = np.random.default_rng(0)
    grammar = make_grammar(rng)
    train, test = grammar.sample(1500, rng, 64), grammar.sample(300, rng, 64)
    tokens = sum(len(tags) for _, tags in test)
    best = sum(sum(a == b for a, b in zip(grammar.posterior_tags(w), t)) for w, t in test) / tokens
    assert best > most_frequent_tag_accuracy(train, test) + 0.04  # the word alone leaves accuracy on the table
    data = load_dataset("pos-standin", val_size=50, num_train=200, num_test=40, max_len=30)
    again = load_dataset("pos-standin", val_size=50, num_train=200, num_test=40, max_len=30)
    assert torch.equal(data.train.x, again.train.x) and torch.equal(data.test.y, again.test.y)
    assert data.task == "tagging" and data.substitute_for == "pos" and (len(data.train), len(data.val)) == (150, 50)
    assert data.train.y.shape == data.train.x.shape == (150, 30)
    assert torch.equal(data.train.y == IGNORE_LABEL, data.train.x == PAD)  # padding exactly where targets ignore
    with pytest.raises(ConfigError, match="label_noise=0.2 needs a classification dataset; 'pos-standin' is tagging"):
        load_dataset("pos-standin", val_size=50, num_train=200, num_test=40, label_noise=0.2)


# -- the Transformer tagger --------------------------------------------------------------------------------------------

def test_transformer_closed_form_count_matches_the_built_module():
    for width, shape, options in [(16, (7, 30), {}), (64, (40, 100), {"depth": 2}), (96, (10, 50), {"heads": 3})]:
        model = build_model("transformer", width, input_shape=shape, num_classes=17, **options)
        assert count_params(model) == param_count("transformer", width, input_shape=shape, num_classes=17, **options)
    # by hand, d 4, 5 ids, 3 positions, 1 layer, 2 tags: embeddings 20 + 12; layer: norms 8 + 8, qkv 48 + 12,
    # out 16 + 4, feed-forward 64 + 16 and 64 + 4; final norm 8; head 8 + 2
    assert param_count("transformer", 4, input_shape=(3, 5), num_classes=2, depth=1) == 32 + 244 + 8 + 10
    counts = [row["n_params"] for row in describe_ladder("transformer")]
    assert counts[0] == pytest.approx(5.5e6, rel=0.01) and counts[-1] == pytest.approx(51e6, rel=0.01)
    with pytest.raises(ValueError, match="width 96 is not divisible by 5 heads"):
        build_model("transformer", 96, input_shape=(10, 50), heads=5)


def test_transformer_ignores_padding_and_reads_context():
    model = build_model("transformer", 8, input_shape=(6, 20), num_classes=5, depth=2,
                        generator=torch.Generator().manual_seed(0)).eval()
    padded = torch.tensor([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        out = model(padded)
        alone = model(torch.tensor([[3, 4, 5]]))  # the same sentence, unpadded and without its batch mate
        changed = model(torch.tensor([[3, 4, 6]]))
    assert out.shape == (2, 6, 5)
    torch.testing.assert_close(out[0, :3], alone[0])
    assert not torch.allclose(changed[0, 0], alone[0, 0])  # token 0's tag depends on a later word
    twin = build_model("transformer", 8, input_shape=(6, 20), num_classes=5, depth=2,
                       generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    assert model.embed.weight[PAD].abs().sum() == 0


def test_tagger_hessian_products_agree_between_double_backward_and_forward_over_reverse():
    from samscale.hessian import HessianOperator
    from samscale.train.loop import token_cross_entropy

    model = build_model("transformer", 8, input_shape=(6, 20), num_classes=5, depth=1,
                        generator=torch.Generator().manual_seed(1))
    x = torch.tensor([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
    y = torch.tensor([[1, 2, 3, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL], [0, 1, 2, 3, 4, 0]])
    vector = torch.randn(count_params(model), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    products = [HessianOperator(model, token_cross_entropy, [(x, y)], hvp_mode=mode).matvec(vector)
                for mode in ("double_backward", "fwd_rev")]
    torch.testing.assert_close(products[0], products[1], rtol=1e-4, atol=1e-6)
    assert products[0].norm() > 0


# -- trainer, ensemble and recipe --------------------------------------------------------------------------------------

def test_ensemble_leaves_tagging_runs_to_train_one_by_one():
    config = {"data": {"name": "pos-standin", "val_size": 50, "options": {"num_train": 200, "num_test": 40}},
              "model": {"family": "mlp", "size": 0.25}, "optim": {"name": "sgd", "lr": 0.1}}
    specs = [build_spec({**config, "train": {"seed": seed}}) for seed in (0, 1)]
    assert unpackable_reason(specs[0]) == "dataset 'pos-standin' is per-token tagging (trained one by one)"
    assert plan_packs(specs) == ([], specs)


def test_pos_transformer_smoke_spec_trains():
    from samscale.recipes import RECIPES
    from samscale.train.loop import dataset_for, train_run

    specs = RECIPES["pos-transformer"].study("smoke").expand()
    assert {s.data.name for s in specs} == {"pos-standin"} and len(specs) == 4
    assert {s.data.name for s in RECIPES["pos-transformer"].study("paper").expand()} == {"pos"}
    spec = next(s for s in specs if s.optim.name == "sam" and s.model.size == 16)
    spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"threads": 1})})
    result = train_run(spec)
    assert result.status == "complete" and 0.0 <= result.final["final_test_acc"] <= 1.0
    assert result.final["best_val_acc"] == result.history[-1]["val_acc"]  # one epoch: best = final, by accuracy
    assert result.final["n_params"] == param_count("transformer", 16, input_shape=dataset_for(spec).input_shape,
                                                   num_classes=17)


# -- the vocabulary of the training split and the trained unknown word ----------------------------------------------

def test_restrict_vocabulary_by_hand():
    from samscale.data.text import restrict_vocabulary

    # ids 2..6 in frequency order; in train: 2 three times, 3 twice, 5 once; 4 and 6 only elsewhere
    train = torch.tensor([[2, 3, 2, PAD], [5, 2, 3, UNK]])
    (val, test) = torch.tensor([[4, 2, PAD, PAD]]), torch.tensor([[6, 5, 3, PAD]])
    ids, (val_ids, test_ids), size = restrict_vocabulary(train, [val, test], min_count=1)
    assert size == 5 and ids.tolist() == [[2, 3, 2, PAD], [4, 2, 3, UNK]]  # 2, 3, 5 kept and renumbered 2, 3, 4
    assert val_ids.tolist() == [[UNK, 2, PAD, PAD]] and test_ids.tolist() == [[UNK, 4, 3, PAD]]
    ids, (val_ids, test_ids), size = restrict_vocabulary(train, [val, test], min_count=2)
    assert size == 4 and ids.tolist() == [[2, 3, 2, PAD], [UNK, 2, 3, UNK]]  # the word seen once is unknown too
    assert test_ids.tolist() == [[UNK, UNK, 3, PAD]]


def test_tagger_vocabulary_is_the_training_split_and_its_unknown_word_is_trained():
    from samscale.data.partition import partition_indices
    from samscale.data.pos import generate_tagged
    from samscale.train.loop import token_cross_entropy

    options = dict(num_train=300, num_test=60, max_len=20, seed=3)
    data = load_dataset("pos-standin", val_size=100, augment=True, **options)
    train_words, test_words = generate_tagged(300, 60, 3, 20)
    train_index, val_index = partition_indices(300, val_size=100, seed=0)
    counts = Counter(w for i in train_index.tolist() for w in train_words[i][0])
    val_only = {w for i in val_index.tolist() for w in train_words[i][0]} - set(counts)
    assert val_only, "the draw must hold words that occur only in the carved validation sentences"
    assert data.input_shape == (20, 2 + len(counts))  # no validation word in the vocabulary
    # a test token whose word never occurs in the training split is the unknown id; so is every validation-only word
    unseen = [(row, col) for row, (words, _) in enumerate(test_words) for col, w in enumerate(words) if w not in counts]
    assert unseen and all(data.test.x[row, col].item() == UNK for row, col in unseen)
    assert all(data.val.x[row, col].item() == UNK for row, words in enumerate(train_words[i][0] for i in val_index)
               for col, w in enumerate(words) if w in val_only)
    assert not bool((data.train.x == UNK).any())  # stored training ids keep every word ...
    # ... and the training augmentation turns each token of a word seen once into UNK with probability ½, per batch,
    # deterministically under the generator's seed, and never touches other words
    singles = torch.zeros_like(data.train.x, dtype=torch.bool)  # from the words themselves, not from the ids
    for row, i in enumerate(train_index.tolist()):
        for col, word in enumerate(train_words[i][0]):
            singles[row, col] = counts[word] == 1
    draws = [data.train_augment(data.train.x, torch.Generator().manual_seed(seed)) for seed in range(40)]
    assert all(torch.equal(d[~singles], data.train.x[~singles]) for d in draws)
    rate = float(sum(int((d[singles] == UNK).sum()) for d in draws)) / (40 * int(singles.sum()))
    assert int(singles.sum()) > 50 and abs(rate - 0.5) < 0.03
    assert torch.equal(draws[7], data.train_augment(data.train.x, torch.Generator().manual_seed(7)))
    assert load_dataset("pos-standin", val_size=100, augment=False, **options).train_augment is None
    # training through the augmentation moves the UNK row, through which the unseen test words are then read
    torch.manual_seed(0)
    model = build_model("transformer", 16, input_shape=data.input_shape, num_classes=17)
    before = model.embed.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(data.train), 50):
        optimizer.zero_grad()
        ids = data.train_augment(data.train.x[start:start + 50], generator)
        token_cross_entropy(model(ids), data.train.y[start:start + 50]).backward()
        optimizer.step()
    after = model.embed.weight.detach()
    assert not torch.equal(after[UNK], before[UNK]) and torch.equal(after[PAD], before[PAD])
    row, col = unseen[0]
    probe = data.test.x[row:row + 1]
    trained = model(probe).detach()
    with torch.no_grad():
        model.embed.weight[UNK] = before[UNK]  # put the untrained unknown vector back: the unseen word's output moves
    assert not torch.allclose(model(probe)[0, col], trained[0, col])
