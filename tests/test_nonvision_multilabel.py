"""Multilabel molecules (ogbg-molpcba): labelled-entry loss, OGB's average precision, the OGB folder reader, the AP
metric kind and the graph-gcn paper budget's selection, against hand computations, scikit-learn and files written
in OGB's layout."""
from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch
from torch import nn

from samscale.data import load_dataset
from samscale.data.errors import ConfigError, DatasetUnavailable
from samscale.spec.metric import Metric
from samscale.spec.run import build_spec
from samscale.spec.study import SelectionRule, Study
from samscale.train.average_precision import binary_average_precision, mean_average_precision
from samscale.train.ensemble import unpackable_reason
from samscale.train.loop import labelled_binary_cross_entropy
from samscale.train.summary import summarize_history, validation_score
from samscale.train.metrics import EpochMeter, evaluate

NAN = math.nan

# -- average precision ------------------------------------------------------------------------------------------------

# task 0: a tie at 0.8 between a positive, a negative and a positive (listed in that order)
SCORES_0 = [0.9, 0.8, 0.8, 0.8, 0.4, 0.2]
LABELS_0 = [1, 1, 0, 1, 0, 1]
# by hand, thresholds from the top: 0.9 → P 1/1, R 1/4; 0.8 → P 3/4, R 3/4; 0.4 → P 3/5, R 3/4; 0.2 → P 4/6, R 1
AP_0 = 1 / 4 * 1 + 2 / 4 * 3 / 4 + 0 * 3 / 5 + 1 / 4 * 4 / 6  # = 19/24
# counting the tied examples one by one in list order would give 1/4 + 1/4·1 + 1/4·3/4 + 1/4·4/6 = 41/48 instead

# task 2: missing labels on the two examples with the highest remaining scores (0.7, 0.5)
SCORES_2 = [0.1, 0.7, 0.3, 0.5, 0.9, 0.2]
LABELS_2 = [0, NAN, 1, NAN, 0, 1]
# labelled, ranked: 0.9 (0), 0.3 (1), 0.2 (1), 0.1 (0): P 0 R 0; P 1/2 R 1/2; P 2/3 R 1; P 2/4 R 1
AP_2 = 1 / 2 * 1 / 2 + 1 / 2 * 2 / 3  # = 7/12
# task 1: every labelled example positive, so OGB skips the task
SCORES_1 = [0.5, 0.1, 0.2, 0.3, 0.9, 0.4]
LABELS_1 = [1, 1, NAN, NAN, 1, NAN]


def test_average_precision_with_ties_and_missing_labels_by_hand():
    assert AP_0 == pytest.approx(19 / 24) and AP_2 == pytest.approx(7 / 12)
    assert binary_average_precision(np.array(SCORES_0), np.array(LABELS_0)) == pytest.approx(19 / 24, rel=1e-12)
    scores = torch.tensor([SCORES_0, SCORES_1, SCORES_2]).T
    targets = torch.tensor([LABELS_0, LABELS_1, LABELS_2], dtype=torch.float32).T
    assert mean_average_precision(scores, targets) == pytest.approx((19 / 24 + 7 / 12) / 2, rel=1e-12)
    # a task without a labelled negative (or positive) in the split is skipped; none left: NaN (OGB raises)
    assert math.isnan(mean_average_precision(scores[:, 1:2], targets[:, 1:2]))
    assert binary_average_precision(np.array([0.3, 0.9]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        binary_average_precision(np.array([0.1, 0.2]), np.array([0.0, 2.0]))
    with pytest.raises(ValueError, match=r"\(examples, tasks\)"):
        mean_average_precision(scores[:, 0], targets[:, 0])


def test_average_precision_equals_ogbs_evaluator_loop_on_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(300, 6)), 1)  # one decimal: many ties
    targets = (rng.random((300, 6)) < 0.2).astype(np.float64)
    targets[rng.random((300, 6)) < 0.5] = np.nan
    targets[:, 5] = np.where(np.isnan(targets[:, 5]), np.nan, 0.0)  # no positive: skipped
    ogb = []  # OGB's Evaluator('ogbg-molpcba')._eval_ap, step by step
    for task in range(targets.shape[1]):
        column = targets[:, task]
        if (column == 1).sum() > 0 and (column == 0).sum() > 0:
            labelled = column == column
            ogb.append(metrics.average_precision_score(column[labelled], scores[labelled, task]))
            ours = binary_average_precision(scores[labelled, task], column[labelled])
            assert ours == pytest.approx(ogb[-1], rel=1e-12, abs=1e-12)
    assert len(ogb) == 5
    assert mean_average_precision(scores, targets) == pytest.approx(sum(ogb) / len(ogb), rel=1e-12)


# -- loss, epoch meter and evaluation ---------------------------------------------------------------------------------

def _softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_labelled_binary_cross_entropy_and_its_epoch_mean_by_hand():
    logits = torch.tensor([[2.0, -1.0, 7.0], [0.5, 3.0, -4.0]])
    targets = torch.tensor([[1.0, 0.0, NAN], [NAN, 1.0, NAN]])
    # −log σ(z) = softplus(−z) for a positive, −log(1 − σ(z)) = softplus(z) for a negative; NaN entries ignored
    by_hand = [_softplus(-2.0), _softplus(-1.0), _softplus(-3.0)]
    loss = labelled_binary_cross_entropy(logits, targets)
    assert loss.item() == pytest.approx(sum(by_hand) / 3, rel=1e-6)
    unlabelled = torch.full((1, 3), NAN)
    logits_b = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    empty = labelled_binary_cross_entropy(logits_b, unlabelled)
    empty.backward()
    assert empty.item() == 0.0 and logits_b.grad.abs().sum().item() == 0.0  # no label: no loss, no gradient
    meter = EpochMeter("multilabel")
    meter.update(loss, logits, targets)
    single = torch.tensor([[0.0, NAN, NAN]])
    meter.update(labelled_binary_cross_entropy(torch.zeros(1, 3), single), torch.zeros(1, 3), single)
    meter.update(empty.detach(), torch.zeros(1, 3), unlabelled)
    # weighted by labelled entries (3, 1 and 0), not by examples; no accuracy for multilabel
    assert meter.result("train_") == pytest.approx({"train_loss": (sum(by_hand) + math.log(2)) / 4}, rel=1e-6)


class _Bank(nn.Module):
    """A fixed 'model': input row i (its only feature) returns the stored scores of example i."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.register_buffer("scores", scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores[x[:, 0].long()]


def test_evaluate_scores_ap_over_the_whole_split_not_per_batch():
    scores = torch.tensor([SCORES_0, SCORES_1, SCORES_2]).T
    targets = torch.tensor([LABELS_0, LABELS_1, LABELS_2], dtype=torch.float32).T
    x = torch.arange(6, dtype=torch.float32)[:, None]
    batches = [(x[:3], targets[:3]), (x[3:], targets[3:])]
    result = evaluate(_Bank(scores), batches, labelled_binary_cross_entropy, prefix="test_", task="multilabel")
    assert set(result) == {"test_loss", "test_ap"}
    assert result["test_ap"] == pytest.approx((19 / 24 + 7 / 12) / 2, rel=1e-12)
    labelled = ~torch.isnan(targets)
    by_hand = [_softplus(-z) if y == 1 else _softplus(z) for z, y in zip(scores[labelled].tolist(),
                                                                          targets[labelled].tolist())]
    assert result["test_loss"] == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-6)


def test_best_epoch_is_chosen_by_validation_ap_and_nan_never_wins():
    history = [
        {"epoch": 1, "val_loss": 0.30, "val_ap": 0.20, "test_ap": 0.21},
        {"epoch": 2, "val_loss": 0.40, "val_ap": 0.25, "test_ap": 0.22},
        {"epoch": 3, "val_loss": 0.10, "val_ap": NAN, "test_ap": 0.30},
    ]
    final = summarize_history(history, score=validation_score("multilabel"))
    assert final["best_epoch"] == 2 and final["best_val_ap"] == 0.25 and final["final_test_ap"] == 0.30
    assert summarize_history(history, score=validation_score("regression"))["best_epoch"] == 3  # loss-scored: lowest loss


def test_multilabel_runs_are_left_to_train_one_by_one():
    spec = build_spec({"data": {"name": "ogbg-molpcba", "val_size": 0}, "model": {"family": "mlp"}})
    assert unpackable_reason(spec) == "dataset 'ogbg-molpcba' is multilabel, scored by average precision " \
                                      "(trained one by one)"


# -- the AP metric kind and selection ---------------------------------------------------------------------------------

def test_ap_is_a_percent_metric_where_higher_is_better_and_reads_well_in_reports():
    metric = Metric("test_ap")
    assert (metric.split, metric.kind, metric.percent, metric.higher_is_better) == ("test", "ap", True, True)
    assert metric.label() == "test average precision (%)" and metric.label(short=True) == "test AP (%)"
    assert Metric("val_ap").label(short=True) == "val. AP (%)" and metric.gain(0.31, 0.29) == pytest.approx(0.02)
    rule = SelectionRule(select_by="val_ap", metric="test_ap", labels={"baseline": "Adam", "treatment": "SAM"})
    assert rule.score_column == "final_val_ap" and rule.maximize
    from samscale.report.columns import column_specs

    specs = column_specs(rule)
    assert specs["baseline_test_ap_mean"].label == "Adam test AP (%)" and specs["baseline_test_ap_mean"].digits == 2
    assert specs["gain_mean"].label == "SAM − Adam (pp)"
    from samscale.store.sqlite import METRICS

    assert {"val_ap", "test_ap"} <= set(METRICS)


STUDY = {
    "name": "s",
    "base": {"data": {"name": "solubility"}, "model": {"family": "gcn"}},
    "grid": {"model.size": [8]},
    "arms": [{"name": "adam", "set": {"optim.name": "sgd"}}, {"name": "sam", "set": {"optim.name": "sam"}}],
    "selection": {"select_by": "val_acc", "metric": "test_acc", "labels": {"baseline": "Adam"}},
    "budgets": {"paper": {"set": {"data.name": "ogbg-molpcba", "data.val_size": 0},
                          "selection": {"select_by": "val_ap", "metric": "test_ap"}},
                "cpu": {}},
}


def test_a_budget_selection_replaces_the_studys_fields_and_unknown_fields_are_refused():
    study = Study.model_validate(STUDY)
    paper = study.with_budget("paper")
    assert (paper.selection.select_by, paper.selection.metric) == ("val_ap", "test_ap")
    assert paper.selection.labels == {"baseline": "Adam"} and paper.selection.tune == ["optim.rho"]  # kept
    assert study.with_budget("cpu").selection == study.selection
    for bad, message in [({"select_by": "val_ap", "selekt_by": "x"}, "unknown field.*'selekt_by'"),
                         ({"select_by": "val_f1"}, "select_by"),
                         ({"tune": ["optim.nope"]}, "optim.nope")]:
        broken = {**STUDY, "budgets": {"paper": {"selection": bad}}}
        with pytest.raises(ValueError, match=message):
            Study.model_validate(broken)


def test_graph_gcn_paper_budget_runs_molpcba_on_ap_and_stops_early_without_its_files(tmp_path, monkeypatch):
    from samscale.recipes import RECIPES, check_data

    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path))
    paper, cpu = (RECIPES["graph-gcn"].study(budget) for budget in ("paper", "cpu"))
    assert paper.base["data"]["name"] == "ogbg-molpcba" and paper.base["data"]["val_size"] == 0
    assert (paper.selection.select_by, paper.selection.metric) == ("val_ap", "test_ap")
    assert (cpu.selection.select_by, cpu.base["data"]["name"]) == ("val_acc", "solubility")
    message = check_data(paper)
    assert message is not None and str(tmp_path / "ogbg-molpcba") in message
    assert "pip install ogb" in message and "pcba.zip" in message


# -- the OGB folder reader (RDKit parses the SMILES) -----------------------------------------------------------------

SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "O=C=O", "CC(C)O", "c1ccncc1", "CCOCC", "C#N"]
HEAVY_ATOMS = [3, 6, 4, 3, 3, 3, 4, 6, 5, 2]
LABELS = [["1", "0", ""], ["0", "", "1"], ["", "1", "0"], ["1", "1", ""], ["0", "", "0"],
          ["1", "0", "1"], ["", "0", "1"], ["0", "1", ""], ["1", "", "0"], ["0", "1", "1"]]
SPLITS = {"train": [3, 0, 4, 1, 2], "valid": [5, 7], "test": [6, 8, 9]}


def _write_gz(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write(text)


def write_ogb_folder(folder, labels=LABELS) -> None:
    """A tiny ogbg-molpcba in OGB's layout: 3 task columns, then smiles and mol_id; scaffold split files."""
    rows = ["PCBA-1,PCBA-2,PCBA-3,smiles,mol_id"]
    rows += [",".join([*label, smiles, f"mol{i}"]) for i, (label, smiles) in enumerate(zip(labels, SMILES))]
    _write_gz(folder / "mapping" / "mol.csv.gz", "\n".join(rows) + "\n")
    for name, index in SPLITS.items():
        _write_gz(folder / "split" / "scaffold" / f"{name}.csv.gz", "".join(f"{i}\n" for i in index))


def _expected_labels(rows: list[int]) -> np.ndarray:
    return np.array([[float(cell) if cell else np.nan for cell in LABELS[row]] for row in rows], dtype=np.float32)


def test_ogb_folder_is_read_with_missing_labels_official_splits_and_concatenated_graphs(tmp_path):
    pytest.importorskip("rdkit")
    write_ogb_folder(tmp_path / "ogbg-molpcba")
    data = load_dataset("ogbg-molpcba", root=str(tmp_path / "ogbg-molpcba"), val_size=0)
    assert data.task == "multilabel" and data.output_dim == 3 and data.num_classes is None
    assert (len(data.train), len(data.val), len(data.test)) == (5, 2, 3)
    assert data.input_shape == (31,)
    for split, name in ((data.train, "train"), (data.val, "valid"), (data.test, "test")):
        np.testing.assert_array_equal(split.y.numpy(), _expected_labels(SPLITS[name]))  # NaN == NaN here
        assert split.y.dtype == torch.float32
        assert split.x.node_counts().tolist() == [HEAVY_ATOMS[row] for row in SPLITS[name]]
    ethanol = data.train.x[1:2]  # row 0 of mol.csv.gz, second in train.csv.gz
    assert ethanol.edges.tolist() == [[0, 1], [1, 2]] and ethanol.nodes[:, 0].tolist() == [1, 1, 1]
    assert "3 binary tasks" in data.source and "5/2/3 train/valid/test" in data.source
    subset = load_dataset("ogbg-molpcba", root=str(tmp_path / "ogbg-molpcba"), val_size=0, train_subset=2)
    assert len(subset.train) == 2 and len(subset.val) == 2 and len(subset.test) == 3

    # OGB's own downloader writes <root>/ogbg_molpcba: found there as well
    write_ogb_folder(tmp_path / "other" / "ogbg_molpcba")
    nested = load_dataset("ogbg-molpcba", root=str(tmp_path / "other"), val_size=0)
    np.testing.assert_array_equal(nested.test.y.numpy(), data.test.y.numpy())


def test_ogb_folder_errors_name_the_problem(tmp_path):
    pytest.importorskip("rdkit")
    folder = tmp_path / "ogbg-molpcba"
    with pytest.raises(ConfigError, match="val_size=0.*got val_size=5000"):
        load_dataset("ogbg-molpcba", root=str(folder), val_size=5000)  # refused before reading anything
    with pytest.raises(DatasetUnavailable, match=r"(?s)not found.*mol\.csv\.gz.*pip install ogb.*pcba\.zip"):
        load_dataset("ogbg-molpcba", root=str(folder), val_size=0)
    write_ogb_folder(folder, labels=[["2", "0", ""], *LABELS[1:]])
    with pytest.raises(DatasetUnavailable, match=r"line 2, column 'PCBA-1'.*label '2' is not 0, 1 or empty"):
        load_dataset("ogbg-molpcba", root=str(folder), val_size=0)
    write_ogb_folder(folder)
    _write_gz(folder / "split" / "scaffold" / "test.csv.gz", "6\n8\n10\n")
    with pytest.raises(DatasetUnavailable, match="row index 10 is outside the 10 molecules"):
        load_dataset("ogbg-molpcba", root=str(folder), val_size=0)
    _write_gz(folder / "split" / "scaffold" / "test.csv.gz", "6\n8\n0\n")
    with pytest.raises(DatasetUnavailable, match="listed twice"):
        load_dataset("ogbg-molpcba", root=str(folder), val_size=0)


def test_a_gcn_trains_on_the_ogb_layout_and_reports_validation_and_test_ap(tmp_path, monkeypatch):
    pytest.importorskip("rdkit")
    from samscale.models.registry import param_count
    from samscale.train.checkpoint import load_checkpoint
    from samscale.train.loop import build_model_for, dataset_for, train_run
    from samscale.workdir import checkpoint_path

    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path))
    write_ogb_folder(tmp_path / "ogbg-molpcba")
    spec = build_spec({
        "data": {"name": "ogbg-molpcba", "val_size": 0, "augment": False},
        "model": {"family": "gcn", "size": 8},
        "optim": {"name": "sam", "base": "adam", "lr": 0.01, "weight_decay": 0.0, "rho": 0.05},
        "schedule": {"kind": "constant"},
        "train": {"epochs": 2, "batch_size": 4},
        "runtime": {"threads": 1},
    })
    result = train_run(spec, workdir=tmp_path / "work")
    assert result.status == "complete"
    assert set(result.history[0]) >= {"train_loss", "val_loss", "val_ap", "test_loss", "test_ap"}
    assert "train_ap" not in result.history[0] and "train_acc" not in result.history[0]
    assert result.final["n_params"] == param_count("gcn", 8, input_shape=(31,), num_classes=3)
    assert result.final["best_epoch"] in (1, 2) and "final_train_ap" in result.final
    # the recorded test AP is OGB's AP of the trained model's scores on the whole test split
    data = dataset_for(spec)
    model = build_model_for(spec, data)
    model.load_state_dict(load_checkpoint(checkpoint_path(tmp_path / "work", spec.run_id))["model"])
    model.eval()
    with torch.no_grad():
        scores = model(data.test.x)
    assert result.final["final_test_ap"] == pytest.approx(mean_average_precision(scores, data.test.y), rel=1e-6)
