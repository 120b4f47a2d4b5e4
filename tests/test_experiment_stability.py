"""The stability recipe: files written, curvature against a dense-Hessian oracle, bounds against closed forms."""
from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import pandas as pd
import pytest
import torch
from torch.func import functional_call, hessian

from samscale.data import DatasetUnavailable, load_dataset
from samscale.errors import ConfigError
from samscale.experiments.stability.run import run_stability, trained_model
from samscale.experiments.stability.bounds import stability_bounds, summarize_against_bounds
from samscale.experiments.stability.budgets import BUDGETS, OPTIMIZERS, StabilityBudget, get_budget
from samscale.recipes import get_recipe
from samscale.spec.run import RunSpec
from samscale.train.loop import dataset_for

PLOTS = ("curvature", "eigenvalues", "training-loss")


def _mnist_available() -> bool:
    try:
        load_dataset("mnist", val_size=0)
    except DatasetUnavailable:
        return False
    return True


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke budget, run once for the whole module: (output folder, progress lines, returned page)."""
    out = tmp_path_factory.mktemp("stability-smoke")
    lines: list[str] = []
    page = run_stability("smoke", out, on_progress=lines.append)
    return out, lines, page


def _problems() -> list[str]:
    names = [p.name for p in BUDGETS["smoke"].problems]
    return names if _mnist_available() else [n for n in names if n != "mnist-subset"]


def test_smoke_budget_writes_every_file(smoke):
    out, lines, page = smoke
    assert page == out / "report.html"
    for name in ("report.html", "report.md", "results.csv", "summary.csv", "results.json"):
        assert (out / name).stat().st_size > 0, name
    for problem in _problems():
        for plot in PLOTS:
            assert (out / "figures" / f"{problem}-{plot}.png").read_bytes().startswith(b"\x89PNG")
            assert b"<svg" in (out / "figures" / f"{problem}-{plot}.svg").read_bytes()
    text = page.read_text()
    assert "samscale reproduce stability --budget smoke" in text
    if _mnist_available():  # two epochs on MNIST end far from zero loss, and the report must say so
        assert re.search(r"SGD on mnist-subset seed 0 \(\d", text) and "short of interpolation" in text
    assert re.findall(r'<img [^>]*src="([^"]*)"', text) and all(
        src.startswith("data:image/svg+xml;base64,") for src in re.findall(r'<img [^>]*src="([^"]*)"', text)
    )  # self-contained: every figure is inlined
    runs = pd.read_csv(out / "results.csv")
    assert sorted(set(runs["problem"])) == sorted(_problems())
    assert len(runs) == len(_problems()) * len(OPTIMIZERS) and (runs["status"] == "complete").all()
    n_runs = BUDGETS["smoke"].n_runs
    assert lines[0] == f"training sgd on mnist-subset, seed 0 (1/{n_runs})" or not _mnist_available()
    assert any(line.endswith(f"({n_runs}/{n_runs})") for line in lines) and lines[-1].startswith("writing the report")
    payload = json.loads((out / "results.json").read_text())
    assert payload["command"].startswith("samscale reproduce stability --budget smoke")
    assert {p["name"] for p in payload["problems"]} == set(_problems())


def _flat_loss(model, loss_fn, names, shapes, numels):
    """Loss of one batch as a function of one flat float64 parameter vector."""

    def loss(flat, x, y):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(flat, numels), shapes)}
        return loss_fn(functional_call(model, params, (x,)), y)

    return loss


def test_curvature_in_results_matches_a_dense_hessian_oracle(smoke):
    """λ_max, the top eigenvalues, s₂, s₃, s₄ and the loss of every teacher–student run, recomputed from per-example
    Hessians formed by torch.func.hessian in float64 and eigvalsh (no Lanczos, no samscale.hessian)."""
    out, _, _ = smoke
    payload = json.loads((out / "results.json").read_text())
    runs = pd.read_csv(out / "results.csv").set_index("run_id")
    checked = 0
    for run in payload["runs"]:
        if run["problem"] != "teacher-student":
            continue
        spec = RunSpec.model_validate(run["spec"])
        dataset = dataset_for(spec)
        model = trained_model(spec, dataset, out / "runs").double()
        named = dict(model.named_parameters())
        names = list(named)
        shapes, numels = [named[n].shape for n in names], [named[n].numel() for n in names]
        flat = torch.cat([named[n].detach().reshape(-1) for n in names])
        loss = _flat_loss(model, torch.nn.functional.mse_loss, names, shapes, numels)
        x, y = dataset.train.x.double(), dataset.train.y.double()
        per_example = torch.stack([hessian(loss)(flat, x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
        mean = per_example.mean(0)
        eigenvalues = torch.linalg.eigvalsh(mean).flip(0)
        row = runs.loc[run["run_id"]]
        assert row["n"] == len(x) and row["n_params"] == flat.numel()
        assert row["train_loss"] == pytest.approx(float(loss(flat, x, y)), rel=1e-9)
        assert row["sharpness"] == pytest.approx(float(eigenvalues[0]), rel=1e-8)
        top = run["curvature"]["top_eigenvalues"]
        assert top == pytest.approx(eigenvalues[: len(top)].tolist(), rel=1e-8)
        for k in (2, 3, 4):
            moment = torch.linalg.matrix_power(per_example, k).mean(0) - torch.linalg.matrix_power(mean, k)
            largest = float(torch.linalg.eigvalsh((moment + moment.T) / 2)[-1])
            assert row[f"s{k}"] == pytest.approx(largest ** (1 / k) if largest > 0 else 0.0, rel=1e-6), k
        checked += 1
    assert checked == len(OPTIMIZERS)


def test_bound_columns_equal_the_closed_forms(smoke):
    out, _, _ = smoke
    runs = pd.read_csv(out / "results.csv")
    assert (runs["batch_size"] == 1).all()
    for row in runs.itertuples():
        eta, rho, n, b = row.eta, row.rho, row.n, row.batch_size
        if row.optimizer == "sgd":
            assert row.rho == 0.0
            assert row.bound_sharpness == pytest.approx(2 / eta, rel=1e-12)
            assert row.bound_s2 == pytest.approx(math.sqrt(b * (n - 1) / (n - b)) / eta, rel=1e-12)
            assert math.isinf(row.bound_s3) and math.isinf(row.bound_s4)
        elif row.optimizer == "usam":
            assert row.bound_sharpness == pytest.approx((math.sqrt(1 + 8 * rho / eta) - 1) / (2 * rho), rel=1e-12)
            assert row.bound_s2 == pytest.approx(math.sqrt(2 / (eta * rho)), rel=1e-12)
            assert row.bound_s3 == pytest.approx((2 / (eta**2 * rho)) ** (1 / 3), rel=1e-12)
            assert row.bound_s4 == pytest.approx(math.sqrt(2) / math.sqrt(eta * rho), rel=1e-12)
        else:  # normalized SAM: no bound is derived
            assert all(math.isnan(getattr(row, f"bound_{q}")) for q in ("sharpness", "s2", "s3", "s4"))
    usam = runs[(runs["optimizer"] == "usam") & (runs["problem"] == "teacher-student")].iloc[0]
    assert (usam["eta"], usam["rho"]) == (0.02, 0.005)  # by hand: (√3 − 1)/0.01, √(2·10⁴), (10⁶)^(1/3), √2/10⁻²
    assert usam["bound_sharpness"] == pytest.approx(73.20508075688772)
    assert (usam["bound_s2"], usam["bound_s4"]) == (pytest.approx(141.4213562373095),) * 2
    assert usam["bound_s3"] == pytest.approx(100.0)


def test_usam_bounds_for_larger_batches_scale_s2_and_leave_s3_s4_underived():
    bounds = stability_bounds("usam", eta=0.1, rho=0.05, batch_size=4, n=10)
    factor = (10 - 4) / (4 * 9)  # variance of a 4-of-10 batch mean without replacement, per unit variance
    assert bounds["s2"] == pytest.approx(math.sqrt(2 / (0.1 * 0.05 * factor)))
    assert bounds["sharpness"] == pytest.approx((math.sqrt(1 + 8 * 0.5) - 1) / 0.1)
    assert math.isnan(bounds["s3"]) and math.isnan(bounds["s4"])
    assert stability_bounds("sgd", eta=0.1, rho=0.0, batch_size=4, n=10)["s2"] == pytest.approx(
        10 * math.sqrt(4 * 9 / 6))
    with pytest.raises(ValueError, match="adam"):
        stability_bounds("adam", 0.1, 0.0, 1, 10)


def test_summary_is_mean_and_sample_std_over_seeds_against_the_bound():
    runs = pd.DataFrame([
        {"problem": "p", "optimizer": "usam", "seed": s, "status": "complete", "sharpness": a, "s2": 3.0,
         "s3": 1.0, "s4": 0.0, "bound_sharpness": 5.0, "bound_s2": 2.0, "bound_s3": math.nan, "bound_s4": math.inf}
        for s, a in ((0, 4.0), (1, 6.0))
    ] + [{"problem": "p", "optimizer": "usam", "seed": 2, "status": "diverged", "sharpness": math.nan}])
    summary = summarize_against_bounds(runs).set_index("quantity")
    a = summary.loc["sharpness"]
    assert (a["mean"], a["std"], a["n_seeds"]) == (5.0, pytest.approx(math.sqrt(2.0)), 2)
    assert (a["bound"], a["ratio"], a["within_bound"], a["holds"]) == (5.0, 1.0, "1/2", False)
    assert summary.loc["s2", "ratio"] == 1.5 and summary.loc["s2", "within_bound"] == "0/2"
    assert summary.loc["s3", "holds"] is None and math.isnan(summary.loc["s3", "ratio"])
    assert summary.loc["s4", "holds"] is True and summary.loc["s4", "ratio"] == 0.0


def test_unknown_budget_raises_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown budget 'huge'.*valid: smoke, cpu, paper"):
        run_stability("huge", tmp_path)
    with pytest.raises(ValueError, match="valid: smoke, cpu, paper"):
        get_recipe("stability").run("tiny", tmp_path)
    assert not any(tmp_path.iterdir())


def test_budgets_use_the_theory_setting_and_cpu_has_several_seeds():
    assert len(get_budget("cpu").seeds) >= 2 and len(get_budget("paper").seeds) > len(get_budget("cpu").seeds)
    for budget in BUDGETS.values():
        for problem in budget.problems:
            for optimizer in budget.optimizers:
                spec = problem.run_spec(optimizer, seed=3)
                o = spec.optim
                assert (o.name, o.base, o.momentum, o.weight_decay, spec.schedule.kind) == (
                    optimizer, "sgd", 0.0, 0.0, "constant")
                assert o.lr == problem.lr and spec.train.batch_size == 1 and spec.train.seed == 3
                assert o.rho == (0.0 if optimizer == "sgd" else problem.rho[optimizer]) and o.m is None


def _teacher_student_only(**changes) -> StabilityBudget:
    smoke = BUDGETS["smoke"]
    problem = next(p for p in smoke.problems if p.name == "teacher-student")
    return replace(smoke, problems=(replace(problem, **changes),), notes=())


def test_training_and_measuring_again_gives_identical_numbers(smoke, tmp_path, monkeypatch):
    out, _, _ = smoke
    monkeypatch.setitem(BUDGETS, "again", _teacher_student_only())
    run_stability("again", tmp_path)  # a fresh folder: no checkpoint to resume from, everything recomputed
    again = pd.read_csv(tmp_path / "results.csv")
    first = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(again, first[first["problem"] == "teacher-student"].reset_index(drop=True))
    assert again["sharpness"].notna().all()


def test_diverged_runs_are_reported_without_curvature(tmp_path, monkeypatch):
    monkeypatch.setitem(BUDGETS, "unstable", _teacher_student_only(epochs=1, lr=1e4))
    page = run_stability("unstable", tmp_path)
    runs = pd.read_csv(tmp_path / "results.csv")
    assert (runs["status"] == "diverged").all() and runs["sharpness"].isna().all()
    assert runs["bound_sharpness"].iloc[0] == pytest.approx(2e-4)
    assert "diverged and carry no curvature" in page.read_text()
    assert pd.read_csv(tmp_path / "summary.csv").empty
