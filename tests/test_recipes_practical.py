"""The practical-setting recipes (label-noise, sparsity, regularization, depth): budgets, protocols and smoke reports.

Each smoke budget is run end to end through `samscale reproduce`; its report is checked against numbers computed
independently here: gains recomputed from runs.csv, parameter counts from the built modules, non-zero weights from
the pruning rule, the noisy training labels against the clean validation split.
"""
import math

import pandas as pd
import pytest
import torch

from samscale.cli import main
from samscale.data import load_dataset
from samscale.models.registry import build_model
from samscale.recipes import EARLY_STOPPING_DIR, RECIPES, recipe_path
from samscale.spec.study import load_study

PRACTICAL = ("label-noise", "sparsity", "regularization", "depth")
CIFAR_BASED = ("regularization", "depth")


def _reproduce(name: str, out) -> pd.DataFrame:
    assert main(["reproduce", name, "--budget", "smoke", "--out", str(out), "--executor", "serial"]) == 0
    runs = pd.read_csv(out / "report" / "runs.csv")
    assert (runs["status"] == "complete").all(), runs[["label", "status", "error"]]
    return runs


def _check_gains(report_dir, runs: pd.DataFrame, epoch: str) -> pd.DataFrame:
    """Every selected gain equals SAM − SGD test accuracy (in points) of the chosen runs, read from runs.csv."""
    selected = pd.read_csv(report_dir / "selected.csv")
    accuracy = runs.set_index("run_id")[f"{epoch}_test_acc"]
    assert len(selected) > 0
    for row in selected.itertuples():
        base, treat = accuracy[row.baseline_run_id], accuracy[row.treatment_run_id]
        assert row.baseline_test_acc == pytest.approx(100 * base)
        assert row.treatment_test_acc == pytest.approx(100 * treat)
        assert row.gain == pytest.approx(100 * (treat - base))
    return selected


@pytest.mark.parametrize("name", PRACTICAL)
def test_every_budget_expands_and_says_what_it_costs(name):
    for budget in ("smoke", "cpu", "paper"):
        study = load_study(recipe_path(name), budget)
        specs = study.expand()
        assert specs and study.budgets[budget].description.strip()
        assert "PLACEHOLDER" not in study.budgets[budget].description
        optimizers = {spec.optim.name for spec in specs}
        assert optimizers == {"sgd", "sam"}
        if budget != "paper" and name in CIFAR_BASED:
            assert {spec.data.name for spec in specs} == {"cifar10-standin"}
        if budget == "paper":
            assert {spec.data.name for spec in specs} == {"cifar10"}
            assert {spec.train.epochs for spec in specs} == {200}
            assert {spec.optim.rho for spec in specs if spec.optim.name == "sam"} == {0.01, 0.02, 0.05, 0.1, 0.2}
            assert {spec.train.seed for spec in specs} == {0, 1, 2}
    assert name in RECIPES


def test_paper_budgets_follow_the_published_grids():
    noise = load_study(recipe_path("label-noise"), "paper").expand()
    assert {s.data.label_noise for s in noise} == {0.0, 0.2, 0.4, 0.6}
    assert {s.model.size for s in noise} == {4, 8, 16, 32, 64, 128, 256}
    pruned = [s for s in load_study(recipe_path("sparsity"), "paper").expand() if s.sparsity.method != "none"]
    assert {s.model.size for s in pruned} == {64}
    assert {s.sparsity.method for s in pruned} == {"random", "snip"}
    assert sorted({s.sparsity.sparsity for s in pruned}) == [1 - (nf / 64) ** 2 for nf in (32, 16, 8)]
    depth = load_study(recipe_path("depth"), "paper").expand()
    assert {s.model.size for s in depth} == {10, 18, 34} and {s.model.options["filters"] for s in depth} == {64}
    regularization = load_study(recipe_path("regularization"), "paper").expand()
    assert {s.optim.weight_decay for s in regularization if s.model.family == "resnet18"} == {0.0}
    assert {s.model.size for s in regularization if s.model.family == "vit"} >= {64}  # width 64 ≈ 209k parameters


def test_label_noise_draw_is_fixed_across_seeds_and_validation_is_clean(tmp_path):
    study = load_study(recipe_path("label-noise"), "cpu")
    by_rate: dict[float, set[str]] = {}
    for spec in study.expand():
        by_rate.setdefault(spec.data.label_noise, set()).add(spec.data.model_dump_json())
    assert all(len(datas) == 1 for datas in by_rate.values())  # train.seed never changes the noisy labels
    assert max(by_rate) > 0
    data = load_study(recipe_path("label-noise"), "smoke").base["data"]
    noisy = load_dataset("mnist", val_size=data["val_size"], train_subset=data["train_subset"], label_noise=0.4)
    clean = load_dataset("mnist", val_size=data["val_size"], train_subset=data["train_subset"])
    assert torch.equal(noisy.val.y, clean.val.y) and torch.equal(noisy.test.y, clean.test.y)
    changed = noisy.train.y != clean.train.y
    assert torch.equal(changed, noisy.noisy_label_mask) and 0.3 < changed.float().mean() < 0.5


def test_label_noise_smoke_reports_gains_per_noise_rate(tmp_path):
    runs = _reproduce("label-noise", tmp_path / "ln")
    assert len(runs) == 8 and set(runs["data.label_noise"]) == {0.0, 0.4}
    selected = _check_gains(tmp_path / "ln" / "report", runs, "final")
    summary = pd.read_csv(tmp_path / "ln" / "report" / "summary.csv")
    assert sorted(zip(summary["data.label_noise"], summary["model.size"])) == [
        (0.0, 0.25), (0.0, 0.5), (0.4, 0.25), (0.4, 0.5)]
    assert len(selected) == 4 and (tmp_path / "ln" / "report" / "trend.json").is_file()


def test_sparsity_smoke_prunes_to_the_requested_non_zero_count(tmp_path):
    runs = _reproduce("sparsity", tmp_path / "sp")
    model = build_model("mlp", 1, input_shape=(1, 28, 28), num_classes=10)
    kernels = [m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    biases = sum(m.bias.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    layerwise = sum(round(0.25 * n) for n in kernels)  # random: every layer keeps round((1 − s)·n)
    global_kept = round(0.25 * sum(kernels))  # SNIP: the round((1 − s)·N) best of all N kernels
    pruned = runs[runs["sparsity.method"] != "none"]
    assert set(pruned["sparsity.method"]) == {"random", "snip"} and len(pruned) == 4
    for _, row in pruned.iterrows():
        kept = layerwise if row["sparsity.method"] == "random" else global_kept
        assert kept <= row["n_nonzero"] <= kept + biases  # biases are never pruned (a dead unit's may stay at 0)
        assert row["n_params"] == sum(kernels) + biases
    dense = runs[runs["sparsity.method"] == "none"]
    assert (dense["n_nonzero"] > 0.99 * dense["n_params"]).all()
    summary = pd.read_csv(tmp_path / "sp" / "report" / "summary.csv")
    groups = set(zip(summary["sparsity.method"], summary["sparsity.sparsity"]))
    assert groups == {("none", 0.0), ("random", 0.75), ("snip", 0.75)}
    _check_gains(tmp_path / "sp" / "report", runs, "final")


def test_regularization_smoke_reports_with_and_without_early_stopping(tmp_path):
    out = tmp_path / "reg"
    runs = _reproduce("regularization", out)
    assert set(zip(runs["model.family"], runs["optim.weight_decay"])) == {("vit", 0.0005), ("resnet18", 0.0)}
    for _, row in runs.iterrows():
        built = build_model(row["model.family"], int(row["model.size"]), input_shape=(3, 32, 32), num_classes=10)
        assert row["n_params"] == sum(p.numel() for p in built.parameters())
    final = _check_gains(out / "report", runs, "final")
    early = _check_gains(out / EARLY_STOPPING_DIR, runs, "best")
    assert len(final) == len(early) == 2
    assert (runs["best_val_acc"] >= runs["final_val_acc"]).all()
    assert "early stopping" in (out / EARLY_STOPPING_DIR / "report.md").read_text()


def test_depth_smoke_counts_parameters_of_the_built_resnets(tmp_path):
    runs = _reproduce("depth", tmp_path / "depth")
    counts = {}
    for depth in (10, 18):
        built = build_model("resnet", depth, input_shape=(3, 32, 32), num_classes=10, filters=4)
        counts[depth] = sum(p.numel() for p in built.parameters())
    assert counts[10] < counts[18]
    for _, row in runs.iterrows():
        assert row["n_params"] == counts[int(row["model.size"])]
    selected = _check_gains(tmp_path / "depth" / "report", runs, "final")
    assert sorted(selected["model.size"]) == [10, 18] and not selected["gain"].map(math.isnan).any()
