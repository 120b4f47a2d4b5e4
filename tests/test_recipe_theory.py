"""The theory and mechanism recipes: listed by `reproduce --list`, the synthetic study's gains recomputed from its
store, and the solution-space experiment's distances and sharpness against independent computations."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from samscale.cli import main
from samscale.data.synthetic import sine_problem
from samscale.errors import ConfigError
from samscale.experiments.solution_space.run import BUDGETS, _train, run_solution_space
from samscale.data import DatasetUnavailable, load_dataset
from samscale.experiments.convergence.dynamics import network_problem
from samscale.experiments.linearized.run import linearize, run_linearized
from samscale.models.mlp import mlp
from samscale.models.regression import two_layer
from samscale.recipes import get_recipe, recipe_path
from samscale.spec.study import load_study

THEORY_RECIPES = ("convergence", "solution-space", "synthetic", "linearized", "two-layer")


def test_reproduce_list_shows_the_theory_recipes(capsys):
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in THEORY_RECIPES:
        assert name in listed
        assert get_recipe(name).name == name


def test_synthetic_budgets_select_on_validation_loss_and_span_the_papers_sizes():
    for budget in ("smoke", "cpu", "paper"):
        study = load_study(recipe_path("synthetic"), budget)
        assert study.selection.select_by == "val_loss" and study.selection.metric == "test_loss"
    paper = load_study(recipe_path("synthetic"), "paper")
    widths = paper.grid["model.size"]
    counts = [12 * w + 1 for w in widths]  # (10 + 1)·w + (w + 1) parameters, d = 10
    assert 9_000 <= min(counts) <= 11_000 and 90_000 <= max(counts) <= 110_000


def test_synthetic_smoke_gain_is_baseline_minus_sam_test_loss(tmp_path):
    out = tmp_path / "synthetic"
    assert main(["reproduce", "synthetic", "--budget", "smoke", "--out", str(out), "--executor", "serial"]) == 0
    assert (out / "report" / "report.html").stat().st_size > 0
    selected = pd.read_csv(out / "report" / "selected.csv")
    assert sorted(selected["model.size"]) == [833, 1667]
    assert list(selected["n_params"]) == [12 * w + 1 for w in selected["model.size"]]
    expected = selected["baseline_test_loss"] - selected["treatment_test_loss"]  # positive = SAM better
    assert selected["gain"].tolist() == pytest.approx(expected.tolist(), rel=1e-12)
    assert (selected["baseline_test_loss"] > 0).all() and (selected["treatment_test_loss"] > 0).all()


@pytest.fixture(scope="module")
def solution_smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("solution-space")
    page = run_solution_space("smoke", out)
    return out, page, json.loads((out / "results.json").read_text())


def test_solution_space_smoke_writes_functions_and_recomputable_distances(solution_smoke):
    out, page, results = solution_smoke
    assert page == out / "report.html"
    for width in BUDGETS["smoke"].widths:
        assert (out / "figures" / f"functions-width-{width}.png").read_bytes().startswith(b"\x89PNG")
    runs = {(r["width"], r["seed"], r["method"]): r for r in results["runs"]}
    for pair in results["pairs"]:
        gd = torch.tensor(runs[(pair["width"], pair["seed"], "gd")]["function"])
        sam = torch.tensor(runs[(pair["width"], pair["seed"], "sam")]["function"])
        assert len(gd) == len(results["x"]) == BUDGETS["smoke"].grid
        assert pair["distance"] == pytest.approx(float(((gd - sam) ** 2).mean().sqrt()), rel=1e-9)
        assert pair["n_params"] == 3 * pair["width"] + 1


def test_solution_space_at_rho_zero_sam_is_gd_and_sharpness_is_the_top_hessian_eigenvalue():
    plan = replace(BUDGETS["smoke"], steps=30, rho=0.0)
    data = sine_problem(plan.n, plan.grid, 0.0, 1.0, torch.Generator().manual_seed(0))
    gd, sam = _train(5, 0, "gd", plan, data), _train(5, 0, "sam", plan, data)
    assert gd["function"] == sam["function"] and gd["sharpness"] == sam["sharpness"]
    # oracle: the model with the end point's parameters loaded, its loss's Hessian by torch.func, largest eigenvalue
    model = two_layer(5, 1, generator=torch.Generator().manual_seed(0)).double()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    end = torch.tensor(gd["params"], dtype=torch.float64)

    def loss(*tensors):
        out = torch.func.functional_call(model, dict(zip(names, tensors)), (data.x.double(),))
        return ((out - data.y.double()) ** 2).mean() / 2

    pieces = [p.view(shape) for p, shape in zip(end.split([s.numel() for s in shapes]), shapes)]
    blocks = torch.func.hessian(loss, argnums=tuple(range(len(pieces))))(*pieces)
    sizes = [p.numel() for p in pieces]
    dense = torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(sizes))], 1)
                       for i in range(len(sizes))])
    assert gd["sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-9)
    assert gd["train_loss"] == pytest.approx(float(loss(*pieces)), rel=1e-9)


def test_unknown_budget_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown budget 'tiny' for the solution-space experiment"):
        run_solution_space("tiny", tmp_path)


def test_linearized_model_equals_the_first_order_taylor_expansion_with_an_explicit_jacobian():
    model = mlp((6, 4), 5, 3, generator=torch.Generator().manual_seed(0)).double()
    params0 = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    moved = {k: v + 0.3 * torch.randn(v.shape, dtype=torch.float64, generator=g) for k, v in params0.items()}
    names = list(params0)

    def flat_forward(*tensors):
        return torch.func.functional_call(model, dict(zip(names, tensors)), (x,))

    jac = torch.autograd.functional.jacobian(flat_forward, tuple(params0.values()))
    expected = flat_forward(*params0.values()) + sum(
        (j.reshape(7, 3, -1) @ (moved[k] - params0[k]).reshape(-1)) for j, k in zip(jac, names))
    torch.testing.assert_close(linearize(model, params0)(moved, x), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(linearize(model, params0)(params0, x), flat_forward(*params0.values()))
    # a genuinely non-linear network differs from its linearization away from w0
    assert not torch.allclose(flat_forward(*moved.values()), expected)


def _mnist_available() -> bool:
    try:
        load_dataset("mnist", val_size=0, train_subset=10)
    except DatasetUnavailable:
        return False
    return True


@pytest.mark.skipif(not _mnist_available(), reason="MNIST is not installed here")
def test_linearized_smoke_reports_both_regimes_and_gains_recomputed_from_runs(tmp_path):
    page = run_linearized("smoke", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert page.exists() and (tmp_path / "figures" / "accuracy.png").exists()
    runs = pd.DataFrame(results["runs"])
    assert sorted(set(runs["regime"])) == ["linearized", "standard"] and len(runs) == 4
    assert {"val_acc", "rho"} <= set(runs.columns)
    for row in results["summary"]:
        mine = runs[runs["regime"] == row["regime"]].set_index("method")["test_acc"]
        assert row["gain_points_mean"] == pytest.approx(mine["sam"] - mine["sgd"], abs=1e-9)
        assert row["gain_relative_pct_mean"] == pytest.approx(100 * (mine["sam"] - mine["sgd"]) / mine["sgd"])


def test_linearized_rho_is_chosen_per_model_on_validation_and_the_gain_carries_a_t_interval():
    from samscale.experiments.linearized.run import BUDGETS as LINEARIZED, _summary, _verdict, choose_rho

    cpu = LINEARIZED["cpu"]
    assert cpu.n_test is None and len(cpu.seeds) >= 3 and cpu.weight_decay == 1e-4 and cpu.n_val > 0
    assert len(cpu.rhos) >= 3
    rows = []
    # validation prefers ρ = 0.2 for the linearized model and 0.05 for the standard one; test says otherwise
    for seed, (sgd, lin_gain, std_gain) in enumerate(((80.0, -9.0, 1.0), (81.0, -11.0, 2.0), (79.0, -10.0, 0.0))):
        for regime, gain, best in (("linearized", lin_gain, 0.2), ("standard", std_gain, 0.05)):
            rows.append({"seed": seed, "regime": regime, "method": "sgd", "rho": 0.0, "test_acc": sgd,
                         "val_acc": 50.0})
            for rho in (0.05, 0.2):
                rows.append({"seed": seed, "regime": regime, "method": "sam", "rho": rho,
                             "test_acc": sgd + gain if rho == best else sgd + 5,
                             "val_acc": 60.0 if rho == best else 55.0})
    runs = pd.DataFrame(rows)
    chosen = choose_rho(runs)
    assert chosen == {"linearized": 0.2, "standard": 0.05}
    summary = _summary(runs, chosen).set_index("regime")
    lin = summary.loc["linearized"]
    assert lin["seeds"] == 3 and lin["gain_points_mean"] == pytest.approx(-10.0)
    assert lin["gain_points_ci95"] == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)  # t_{0.975,2}·s/√n
    relative = [100 * g / s for s, g in ((80.0, -9.0), (81.0, -11.0), (79.0, -10.0))]
    assert lin["gain_relative_pct_mean"] == pytest.approx(sum(relative) / 3)
    lines = _verdict(summary.reset_index())
    assert any("reaches across −10" in line for line in lines)
    far = summary.reset_index().assign(gain_points_mean=[-30.0, 1.0], gain_relative_pct_mean=[-35.0, 1.0])
    assert sum("supports the paper's claim" in line for line in _verdict(far)) == 2
    near = summary.reset_index().assign(gain_points_mean=[0.0, 1.0], gain_relative_pct_mean=[0.0, 1.0])
    assert sum("rules out, at this budget, the paper's claim" in line for line in _verdict(near)) == 2


def test_two_layer_network_data_and_exponent_fit_against_hand_computations():
    from samscale.experiments.two_layer.run import BUDGETS as TWO_LAYER, fit_exponent, network, patch_data

    w = torch.tensor([[[1.0, -1.0], [0.5, 2.0]], [[-1.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)  # (2, m=2, d=2)
    x = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)  # patches (2, 0) and (0, 1)
    # F₊ = (relu(2) + relu(-1) + relu(1) + relu(2)) / 2 = 2.5; F₋ = (relu(-2) + relu(1) + relu(2) + relu(0)) / 2 = 1.5
    assert float(network(w, x)) == pytest.approx(1.0)
    plan = replace(TWO_LAYER["smoke"], d=7)
    x, y = patch_data(plan, 50, torch.Generator().manual_seed(0))
    assert x.shape == (50, 2, 7) and set(y.tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(x[:, 0, 0], plan.signal * y)
    assert float(x[:, 0, 1:].abs().max()) == 0 and float(x[:, 1, 0].abs().max()) == 0  # ξ ⟂ μ
    assert fit_exponent([2, 4, 8, 16], [3 / m for m in (2, 4, 8, 16)]) == pytest.approx(-1.0)
    assert fit_exponent([2, 4], [0.5, 0.0]) != fit_exponent([2, 4], [0.5, 0.0])  # NaN: one positive point


def test_two_layer_smoke_writes_exponents_matching_its_table(tmp_path):
    from samscale.experiments.two_layer.run import fit_exponent, run_two_layer

    run_two_layer("smoke", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    summary = pd.DataFrame(results["summary"])
    for method, exponent in results["exponents"].items():
        mine = summary[summary["method"] == method]
        expected = fit_exponent(list(mine["width"]), list(mine["mean"]))
        assert (math.nan if exponent is None else exponent) == pytest.approx(expected, nan_ok=True)  # JSON: NaN → null
    runs = pd.DataFrame(results["runs"])
    assert runs.groupby(["width", "method"])["test_error"].mean().tolist() == pytest.approx(summary["mean"].tolist())


def test_two_layer_budgets_sit_in_the_harmful_overfitting_regime_and_gd_fails_there():
    from samscale.experiments.two_layer.run import BUDGETS as TWO_LAYER, _train, patch_data, test_error

    for name, plan in TWO_LAYER.items():  # n‖μ‖⁴ < σ⁴d: Chen et al.'s regime where GD memorizes the noise
        assert plan.n * plan.signal**4 < plan.sigma**4 * plan.d and plan.snr == pytest.approx(
            plan.n * plan.signal**4 / (plan.sigma**4 * plan.d)), name
    assert TWO_LAYER["cpu"].snr < 0.3  # a factor 4 below the criterion (the old constants sat 20× above it)
    plan = TWO_LAYER["cpu"]
    generator = torch.Generator().manual_seed(1000)
    x, y_clean = patch_data(plan, plan.n, generator)
    y = torch.where(torch.rand(plan.n, generator=generator) < plan.flip, -y_clean, y_clean)
    w = _train(plan, min(plan.widths), 0, "gd", x, y)
    error, mistakes, points = test_error(plan, w, torch.Generator().manual_seed(1))
    assert error > 0.1 and mistakes >= plan.min_mistakes  # far from 0, and estimated within ±10 %


def test_two_layer_projected_test_error_equals_the_error_on_explicit_test_points():
    from samscale.experiments.two_layer.run import BUDGETS as TWO_LAYER, network, patch_data, relative_half_width
    from samscale.experiments.two_layer.run import test_error

    plan = replace(TWO_LAYER["smoke"], d=30, min_mistakes=10**9, max_test=200_000)
    w = 0.3 * torch.randn(2, 3, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w[:, :, 0] = torch.tensor([[0.2, -0.1, 0.05], [-0.15, 0.1, 0.0]], dtype=torch.float64)  # weak signal weights
    x, y = patch_data(plan, 200_000, torch.Generator().manual_seed(1))
    direct = float((torch.sign(network(w, x)) != y).double().mean())
    projected, mistakes, points = test_error(plan, w, torch.Generator().manual_seed(2))
    assert points == 200_000 and 0.05 < direct < 0.5
    # two independent estimates of one error: their difference is within 4.5 standard errors
    assert abs(projected - direct) < 4.5 * math.sqrt(2 * direct * (1 - direct) / 200_000)
    assert relative_half_width(400, 10_000) == pytest.approx(1.96 * math.sqrt(0.04 * 0.96 / 10_000) / 0.04, rel=1e-4)
    assert relative_half_width(0, 10) == math.inf
    # the sampler stops once it has counted enough mistakes
    error, mistakes, points = test_error(replace(plan, min_mistakes=400), w, torch.Generator().manual_seed(3))
    assert mistakes >= 400 and points < 200_000 and relative_half_width(mistakes, points) < 0.1


def test_linearized_gain_interval_is_calibrated_over_three_seeds():
    """The t-interval the linearized report prints (grouped_stats over seeds) covers the true gain in 93–97.5 % of
    simulated 3-seed studies with normal seed-to-seed noise."""
    from samscale.selection.stats import grouped_stats

    generator = np.random.default_rng(0)
    studies, seeds, truth = 8000, 3, -2.0
    gains = pd.Series(truth + 1.5 * generator.standard_normal(studies * seeds))
    stats = grouped_stats(gains, [pd.Series(np.repeat(np.arange(studies), seeds))], "gain")
    covered = ((stats["gain_mean"] - truth).abs() <= stats["gain_ci95"]).mean()
    assert 0.93 <= covered <= 0.975, covered


def test_two_layer_error_interval_is_calibrated_under_its_stopping_rule():
    """The ±half-width each two-layer run reports (normal interval, sampling stopped at 400 mistakes) covers the true
    error in 93–97.5 % of simulated runs, for a large and a small error."""
    from samscale.experiments.two_layer.run import CHUNK, relative_half_width

    generator = np.random.default_rng(0)
    for error in (0.2, 0.002):
        covered = 0
        for _ in range(4000):
            mistakes = points = 0
            while mistakes < 400:
                mistakes += int(generator.binomial(CHUNK, error))
                points += CHUNK
            estimate = mistakes / points
            covered += abs(estimate - error) <= relative_half_width(mistakes, points) * estimate
        assert 0.93 <= covered / 4000 <= 0.975, (error, covered / 4000)
