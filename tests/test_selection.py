"""Selection of ρ* and baselines on validation, gains and their statistics, on hand-built runs frames."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from samscale.errors import ConfigError
from samscale.selection.null import selection_null
from samscale.selection.select import SelectionRule, rho_table, select, summarize, t_quantile_975

NAN = math.nan


def run(optim: str, size: float, seed: int, *, rho: float = 0.0, val: float = NAN, test: float = NAN,
        status: str = "complete", lr: float = 0.1, noise: float = 0.0, train_loss: float = 0.01,
        n_params: int | None = None, **extra) -> dict:
    """One runs-frame row as the store produces it (final and best-epoch metrics equal unless overridden)."""
    row = {
        "run_id": f"{optim}-k{size}-r{rho}-lr{lr}-n{noise}-s{seed}",
        "status": status,
        "model.family": "mlp", "model.size": size, "optim.name": optim, "optim.rho": rho, "optim.lr": lr,
        "train.seed": seed, "data.name": "mnist", "data.label_noise": noise, "sparsity.sparsity": 0.0,
        "n_params": int(1000 * size) if n_params is None else n_params, "epochs": 10, "epochs_done": 10,
        "final_train_loss": train_loss, "final_train_acc": 1.0,
        "final_val_loss": 1 - val, "final_val_acc": val, "final_test_loss": 1 - test, "final_test_acc": test,
        "best_epoch": 10, "best_val_acc": val, "best_val_loss": 1 - val, "best_test_acc": test,
        "best_test_loss": 1 - test,
    }
    row.update(extra)
    return row


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


RULE = SelectionRule()


def test_rho_star_is_chosen_on_validation_not_on_test():
    runs = frame(
        run("sgd", 1, 0, val=0.90, test=0.90),
        run("sam", 1, 0, rho=0.01, val=0.95, test=0.91),  # best on validation
        run("sam", 1, 0, rho=0.10, val=0.93, test=0.97),  # best on test: must not be chosen
    )
    row = select(runs, RULE).iloc[0]
    assert row["rho_star"] == 0.01
    assert row["treatment_test_acc"] == pytest.approx(91.0)
    assert row["baseline_test_acc"] == pytest.approx(90.0)
    assert row["gain"] == pytest.approx(1.0)  # percentage points: (0.91 - 0.90) * 100
    assert row["treatment_val_acc"] == pytest.approx(95.0)
    assert row["treatment_run_id"] == "sam-k1-r0.01-lr0.1-n0.0-s0"
    assert (row["treatment_n_complete"], row["baseline_n_complete"]) == (2, 1)


def test_loss_gain_is_baseline_minus_treatment_and_loss_is_minimized():
    rule = SelectionRule(select_by="val_loss", metric="test_loss")
    runs = frame(
        run("sgd", 1, 0, final_val_loss=0.6, final_test_loss=0.50, final_val_acc=NAN, final_test_acc=NAN),
        run("sam", 1, 0, rho=0.02, final_val_loss=0.30, final_test_loss=0.40, final_val_acc=NAN, final_test_acc=NAN),
        run("sam", 1, 0, rho=0.05, final_val_loss=0.20, final_test_loss=0.45, final_val_acc=NAN, final_test_acc=NAN),
    )
    row = select(runs, rule).iloc[0]
    assert row["rho_star"] == 0.05  # smallest validation loss
    assert row["treatment_test_loss"] == pytest.approx(0.45)  # losses are not rescaled
    assert row["gain"] == pytest.approx(0.50 - 0.45)


def test_return_gain_is_treatment_minus_baseline_and_return_is_maximized():
    rule = SelectionRule(select_by="val_return", metric="test_return")
    runs = frame(
        run("sgd", 1, 0, final_val_return=3.0, final_test_return=2.5),
        run("sam", 1, 0, rho=0.02, final_val_return=4.0, final_test_return=3.0),
        run("sam", 1, 0, rho=0.05, final_val_return=3.5, final_test_return=9.0),  # best on test: not chosen
    )
    row = select(runs, rule).iloc[0]
    assert row["rho_star"] == 0.02  # largest validation return
    assert row["treatment_test_return"] == pytest.approx(3.0)  # returns are not rescaled
    assert row["gain"] == pytest.approx(3.0 - 2.5)
    assert rule.measure.label() == "test episode return" and rule.measure.gain_unit == ""


def test_metric_names_are_checked():
    from samscale.spec.metric import Metric

    assert (Metric("val_acc").scale, Metric("test_loss").higher_is_better, Metric("val_return").label(short=True)) \
        == (100.0, False, "val. return")
    with pytest.raises(ValueError, match="unknown metric 'test_f1'"):
        Metric("test_f1")
    with pytest.raises(ConfigError, match="selection.metric"):
        SelectionRule.parse({"metric": "test_f1"})
    with pytest.raises(ConfigError, match=r"labels names \['control'\]; valid keys are \['baseline', 'treatment'\]"):
        SelectionRule.parse({"labels": {"control": "Adam"}})


def test_negative_gain_when_sam_is_worse():
    runs = frame(run("sgd", 1, 0, val=0.9, test=0.92), run("sam", 1, 0, rho=0.05, val=0.9, test=0.905))
    assert select(runs, RULE).iloc[0]["gain"] == pytest.approx(-1.5)


def test_best_epoch_rule_reads_the_early_stopping_columns():
    runs = frame(
        run("sgd", 1, 0, val=0.90, test=0.90, best_val_acc=0.91, best_test_acc=0.93),
        run("sam", 1, 0, rho=0.01, val=0.95, test=0.95, best_val_acc=0.92, best_test_acc=0.94),
        run("sam", 1, 0, rho=0.10, val=0.80, test=0.80, best_val_acc=0.96, best_test_acc=0.96),
    )
    final = select(runs, RULE).iloc[0]
    best = select(runs, SelectionRule(epoch="best")).iloc[0]
    assert (final["rho_star"], final["gain"]) == (0.01, pytest.approx(5.0))
    assert (best["rho_star"], best["gain"]) == (0.10, pytest.approx(3.0))  # 96 - 93


def test_baseline_with_several_configurations_is_tuned_on_validation():
    runs = frame(
        run("sgd", 1, 0, lr=0.1, val=0.90, test=0.95),   # best test, worse validation
        run("sgd", 1, 0, lr=0.05, val=0.92, test=0.89),  # chosen
        run("sam", 1, 0, rho=0.05, val=0.93, test=0.91),
    )
    row = select(runs, RULE).iloc[0]
    assert row["baseline_run_id"] == "sgd-k1-r0.0-lr0.05-n0.0-s0"
    assert row["baseline_test_acc"] == pytest.approx(89.0)
    assert row["gain"] == pytest.approx(2.0)
    assert row["baseline_n_complete"] == 2


def test_diverged_runs_are_counted_but_never_selected():
    runs = frame(
        run("sgd", 1, 0, val=0.90, test=0.90),
        run("sam", 1, 0, rho=0.05, val=0.91, test=0.92),
        run("sam", 1, 0, rho=0.50, val=0.99, test=0.99, status="diverged"),  # best numbers, but it diverged
        run("sgd", 2, 0, val=0.90, test=0.90),
        run("sam", 2, 0, rho=0.50, val=0.99, test=0.99, status="diverged"),  # the only SAM run of size 2
    )
    selected = select(runs, RULE)
    small, large = selected.iloc[0], selected.iloc[1]
    assert small["rho_star"] == 0.05 and small["gain"] == pytest.approx(2.0)
    assert (small["treatment_n_complete"], small["treatment_n_diverged"]) == (1, 1)
    assert pd.isna(large["treatment_run_id"]) and pd.isna(large["rho_star"]) and math.isnan(large["gain"])
    summary = summarize(selected, RULE, expected_seeds=1)
    assert list(summary["n_seeds"]) == [1, 0]
    assert list(summary["partial"]) == [False, True]  # size 2 lacks a usable seed; size 1 is finished
    table = rho_table(runs, RULE)
    diverged = table[(table["model.size"] == 1) & (table["optim.rho"] == 0.5)].iloc[0]
    assert diverged["n_diverged"] == 1 and diverged["n_seeds"] == 0 and math.isnan(diverged["val_acc_mean"])


def test_ties_on_validation_go_to_the_smaller_rho():
    runs = frame(
        run("sgd", 1, 0, val=0.9, test=0.9),
        run("sam", 1, 0, rho=0.2, val=0.95, test=0.93),
        run("sam", 1, 0, rho=0.05, val=0.95, test=0.91),
    )
    assert select(runs, RULE).iloc[0]["rho_star"] == 0.05


def test_group_by_keeps_noise_levels_apart_and_is_required_when_they_differ():
    runs = frame(
        run("sgd", 1, 0, noise=0.0, val=0.90, test=0.90),
        run("sam", 1, 0, noise=0.0, rho=0.05, val=0.91, test=0.91),
        run("sgd", 1, 0, noise=0.4, val=0.60, test=0.60),
        run("sam", 1, 0, noise=0.4, rho=0.05, val=0.70, test=0.72),
    )
    with pytest.raises(ConfigError, match="data.label_noise"):
        select(runs, RULE)
    rule = SelectionRule(group_by=["data.label_noise"])
    selected = select(runs, rule)
    gains = dict(zip(selected["data.label_noise"], selected["gain"]))
    assert gains == {0.0: pytest.approx(1.0), 0.4: pytest.approx(12.0)}
    summary = summarize(selected, rule)
    assert list(summary["data.label_noise"]) == [0.0, 0.4]
    assert list(summary["gain_mean"]) == [pytest.approx(1.0), pytest.approx(12.0)]


def test_summarize_mean_std_and_t_interval_by_hand():
    gains3 = [1.0, 2.0, 4.0]
    gains5 = [0.5, 1.5, 1.0, 3.0, 2.0]
    rows = []
    for size, gains in ((1, gains3), (4, gains5)):
        for seed, gain in enumerate(gains):
            rows.append(run("sgd", size, seed, val=0.5, test=0.5, train_loss=0.1 * (seed + 1)))
            rows.append(run("sam", size, seed, rho=0.05, val=0.6, test=0.5 + gain / 100, train_loss=0.2))
            rows.append(run("sam", size, seed, rho=0.2, val=0.55, test=0.9, train_loss=0.2))  # never chosen
    summary = summarize(select(frame(*rows), RULE), RULE)
    small, large = summary.iloc[0], summary.iloc[1]
    mean3 = 7 / 3
    std3 = math.sqrt(((1 - mean3) ** 2 + (2 - mean3) ** 2 + (4 - mean3) ** 2) / 2)
    assert small["gain_mean"] == pytest.approx(mean3)
    assert small["gain_std"] == pytest.approx(std3)
    assert small["gain_ci95"] == pytest.approx(4.3027 * std3 / math.sqrt(3), rel=1e-4)
    mean5 = 8 / 5
    std5 = math.sqrt(sum((g - mean5) ** 2 for g in gains5) / 4)
    assert large["gain_mean"] == pytest.approx(mean5)
    assert large["gain_ci95"] == pytest.approx(2.7764 * std5 / math.sqrt(5), rel=1e-4)
    assert small["rho_star"] == 0.05 and large["rho_star"] == 0.05
    assert small["baseline_test_acc_mean"] == pytest.approx(50.0)
    assert small["treatment_test_acc_mean"] == pytest.approx(50.0 + mean3)
    assert small["baseline_train_loss_mean"] == pytest.approx(0.2)  # (0.1 + 0.2 + 0.3) / 3
    assert small["baseline_train_loss_std"] == pytest.approx(0.1)
    assert small["gain_seeds"] == pytest.approx(gains3) and small["seeds"] == [0, 1, 2]
    assert (small["n_params"], small["n_seeds"], large["n_seeds"]) == (1000, 3, 5)
    assert not summary["partial"].any()


def test_one_seed_has_zero_std_and_no_interval():
    runs = frame(run("sgd", 1, 0, val=0.9, test=0.9), run("sam", 1, 0, rho=0.05, val=0.9, test=0.93))
    row = summarize(select(runs, RULE), RULE).iloc[0]
    assert row["gain_mean"] == pytest.approx(3.0) and row["gain_std"] == 0.0 and math.isnan(row["gain_ci95"])


def test_partial_when_runs_are_unfinished_or_seeds_are_missing():
    rows = []
    for size, seeds in ((1, 3), (2, 3), (4, 2)):
        for seed in range(seeds):
            rows.append(run("sgd", size, seed, val=0.9, test=0.9))
            rows.append(run("sam", size, seed, rho=0.05, val=0.9, test=0.91))
    rows.append(run("sam", 2, 0, rho=0.2, status="running"))  # unfinished extra ρ at size 2
    rows.append(run("sam", 1, 0, rho=0.9, status="diverged"))  # diverged: finished, not partial
    summary = summarize(select(frame(*rows), RULE), RULE, expected_seeds=3)
    assert list(summary["model.size"]) == [1, 2, 4]
    assert list(summary["partial"]) == [False, True, True]
    assert list(summary["n_unfinished"]) == [0, 1, 0]
    assert list(summary["n_diverged"]) == [1, 0, 0]
    assert list(summary["n_seeds"]) == [3, 3, 2]
    no_expectation = summarize(select(frame(*rows), RULE), RULE)
    assert list(no_expectation["partial"]) == [False, True, False]


def test_pending_treatment_leaves_the_seed_unpaired():
    runs = frame(run("sgd", 1, 0, val=0.9, test=0.9), run("sam", 1, 0, rho=0.05, status="pending"),
                 run("sgd", 1, 1, val=0.9, test=0.9), run("sam", 1, 1, rho=0.05, val=0.9, test=0.92))
    selected = select(runs, RULE)
    assert selected["gain"].isna().tolist() == [True, False]
    row = summarize(selected, RULE).iloc[0]
    assert (row["n_seeds"], row["gain_mean"], row["partial"]) == (1, pytest.approx(2.0), True)


def test_rho_table_means_validation_over_seeds_and_counts_choices():
    runs = frame(
        run("sgd", 1, 0, val=0.9, test=0.9), run("sgd", 1, 1, val=0.9, test=0.9),
        run("sam", 1, 0, rho=0.01, val=0.80, test=0.8), run("sam", 1, 1, rho=0.01, val=0.96, test=0.8),
        run("sam", 1, 0, rho=0.10, val=0.90, test=0.8), run("sam", 1, 1, rho=0.10, val=0.92, test=0.8),
    )
    table = rho_table(runs, RULE).set_index("optim.rho")
    assert table.loc[0.01, "val_acc_mean"] == pytest.approx(88.0)
    assert table.loc[0.10, "val_acc_mean"] == pytest.approx(91.0)
    assert table.loc[0.01, "val_acc_std"] == pytest.approx(np.std([80.0, 96.0], ddof=1))
    # seed 1 alone would pick 0.01 (96 > 92), but the seed mean picks 0.10 (91 > 88) for both seeds
    assert table.loc[0.01, "n_chosen"] == 0 and table.loc[0.10, "n_chosen"] == 2
    assert table["chosen"].tolist() == [False, True]
    assert select(runs, RULE)["rho_star"].tolist() == [0.10, 0.10]
    assert list(table["n_seeds"]) == [2, 2]


def test_analysis_columns_follow_the_chosen_runs_and_settings_are_ignored():
    runs = frame(
        run("sgd", 1, 0, val=0.9, test=0.9, **{"analysis.lambda_max": 40.0, "analysis.n_examples": 1024}),
        run("sam", 1, 0, rho=0.01, val=0.8, test=0.9, **{"analysis.lambda_max": 30.0, "analysis.n_examples": 1024}),
        run("sam", 1, 0, rho=0.05, val=0.9, test=0.9, **{"analysis.lambda_max": 12.5, "analysis.n_examples": 1024}),
    )
    selected = select(runs, RULE)
    row = selected.iloc[0]
    assert (row["baseline_analysis.lambda_max"], row["treatment_analysis.lambda_max"]) == (40.0, 12.5)
    assert "treatment_analysis.n_examples" not in selected
    assert summarize(selected, RULE).iloc[0]["treatment_analysis.lambda_max_mean"] == 12.5


def test_t_quantile_matches_closed_forms_and_numerical_integration():
    assert t_quantile_975(1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-7)  # Cauchy
    assert t_quantile_975(2) == pytest.approx(math.sqrt(2 * 0.95**2 / (1 - 0.95**2)), rel=1e-7)  # t/√(2+t²) = 0.95
    assert t_quantile_975(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile_975(4) == pytest.approx(2.7764, abs=1e-4)
    for df in (3, 4, 9, 17, 30, 31, 45, 200):
        q = t_quantile_975(df)
        x = np.linspace(0.0, q, 20001)
        log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))
        mass = (x[1] - x[0]) / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())  # Simpson
        assert mass == pytest.approx(0.475, abs=1e-7), df
    with pytest.raises(ValueError, match="positive integer"):
        t_quantile_975(0)


def test_bad_input_raises_clear_errors():
    runs = frame(run("sgd", 1, 0, val=0.9, test=0.9), run("sam", 1, 0, rho=0.05, val=0.9, test=0.9))
    with pytest.raises(ConfigError, match="optim.momentum"):
        select(runs, SelectionRule(baseline={"optim.momentum": 0.9}))
    with pytest.raises(ConfigError, match="both the baseline"):
        select(runs, SelectionRule(baseline={"model.family": "mlp"}))
    with pytest.raises(ConfigError, match="unknown run status"):
        select(runs.assign(status="done"), RULE)
    with pytest.raises(ConfigError, match="select_by='val_loss'"):
        select(runs.assign(final_val_acc=NAN), RULE)
    with pytest.raises(ConfigError, match="select_by"):
        SelectionRule.parse({"select_by": "test_acc"})
    with pytest.raises(ConfigError, match="grouping axes"):
        SelectionRule.parse({"tune": ["optim.rho"], "group_by": ["optim.rho"]})
    with pytest.raises(ConfigError, match="collide"):
        SelectionRule.parse({"tune": ["optim.lr", "schedule.lr"]})
    with pytest.raises(ConfigError, match="select\\(\\)"):
        summarize(runs, RULE)
    with pytest.raises(ValueError, match="expected_seeds"):
        summarize(select(runs, RULE), RULE, expected_seeds=0)


def test_filter_values_may_be_lists_and_treatment_axes_must_be_tuned():
    runs = frame(
        run("sgd", 1, 0, val=0.9, test=0.9),
        run("sam", 1, 0, rho=0.05, val=0.91, test=0.92),
        run("asam", 1, 0, rho=0.5, val=0.95, test=0.93),
    )
    arms = {"treatment": {"optim.name": ["sam", "asam"]}}
    with pytest.raises(ConfigError, match="optim.name"):
        select(runs, SelectionRule(**arms))
    row = select(runs, SelectionRule(**arms, tune=["optim.name", "optim.rho"])).iloc[0]
    assert (row["name_star"], row["rho_star"], row["gain"]) == ("asam", 0.5, pytest.approx(3.0))


def test_selection_is_independent_of_row_order():
    rows = [run("sgd", k, s, val=0.9, test=0.9) for k in (1, 2) for s in (0, 1)]
    rows += [run("sam", k, s, rho=r, val=0.9 + r / 10 * (s + 1), test=0.9 + r) for k in (1, 2) for s in (0, 1)
             for r in (0.01, 0.1)]
    runs = frame(*rows)
    shuffled = runs.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(select(runs, RULE), select(shuffled, RULE))


# -- simulated studies: no effect, a planted effect, and the per-seed rule this selection replaced ---------------
RHOS = (0.01, 0.02, 0.05, 0.1, 0.2)


def simulated(n_studies: int, *, seeds: int = 5, sizes: int = 3, effect=None, rng_seed: int = 0):
    """Many small MNIST-like studies at once, as one runs frame grouped by `study`, plus [study, size, seed, arm]
    arrays of validation and test accuracy in % (arm 0 = SGD, arms 1..5 = SAM at RHOS).

    Each run's accuracy is 98% + a run-quality term shared by its validation and test scores (sd 0.06 pp) + split
    noise of each score (sd 0.06 pp each): validation and test correlate at 0.5 across runs. `effect` maps a SAM ρ
    to a gain in pp added to both scores of that ρ's runs.
    """
    rng = np.random.default_rng(rng_seed)
    shape = (n_studies, sizes, seeds, 1 + len(RHOS))
    quality = rng.normal(0.0, 0.06, shape)
    val = 98.0 + quality + rng.normal(0.0, 0.06, shape)
    test = 98.0 + quality + rng.normal(0.0, 0.06, shape)
    for arm, rho in enumerate(RHOS, start=1):
        val[..., arm] += (effect or {}).get(rho, 0.0)
        test[..., arm] += (effect or {}).get(rho, 0.0)
    study, size, seed, arm = (a.ravel() for a in np.indices(shape))
    rho = np.array([0.0, *RHOS])[arm]
    runs = pd.DataFrame({
        "run_id": [f"{a}-{b}-{c}-{d}" for a, b, c, d in zip(study, size, seed, arm)],
        "status": "complete", "study": study, "model.size": size + 1, "train.seed": seed,
        "optim.name": np.where(arm == 0, "sgd", "sam"), "optim.rho": rho, "n_params": 1000 * (size + 1),
        "final_train_loss": 0.01, "final_val_acc": val.ravel() / 100, "final_test_acc": test.ravel() / 100,
    })
    return runs, val, test


SIM_RULE = SelectionRule(group_by=["study"])


def oracle_seed_mean_rule(val: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ρ* index per (study, size) from the seed-mean validation accuracy, and every seed's gain at it."""
    chosen = np.argmax(val[..., 1:].mean(axis=2), axis=2) + 1
    at = np.take_along_axis(test, chosen[:, :, None, None].repeat(test.shape[2], axis=2), axis=3)[..., 0]
    return chosen, at - test[..., 0]


def oracle_per_seed_rule(val: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The replaced rule: ρ chosen on each seed's own validation accuracy; gain per (study, size, seed)."""
    chosen = np.argmax(val[..., 1:], axis=3) + 1
    return np.take_along_axis(test, chosen[..., None], axis=3)[..., 0] - test[..., 0]


def test_selection_matches_an_independent_seed_mean_oracle():
    runs, val, test = simulated(40, rng_seed=1)
    selected = select(runs, SIM_RULE)
    chosen, gains = oracle_seed_mean_rule(val, test)
    ordered = selected.sort_values(["study", "model.size", "train.seed"])
    np.testing.assert_allclose(ordered["gain"].to_numpy(), gains.ravel(), atol=1e-9)
    expected_rho = np.array([0.0, *RHOS])[chosen]  # [study, size]
    np.testing.assert_array_equal(ordered["rho_star"].to_numpy().reshape(gains.shape)[:, :, 0], expected_rho)
    default = (test[..., 1 + RHOS.index(0.05)] - test[..., 0]).ravel()  # ρ = 0.05, untuned
    np.testing.assert_allclose(ordered["default_gain"].to_numpy(), default, atol=1e-9)
    assert ordered["default_in_grid"].all()


def test_no_effect_gain_interval_covers_zero_and_the_null_predicts_the_residual_bias():
    runs, val, test = simulated(400, rng_seed=2)
    selected = select(runs, SIM_RULE)
    summary = summarize(selected, SIM_RULE, null=selection_null(runs, SIM_RULE, permutations=200))
    assert len(summary) == 1200 and (summary["n_seeds"] == 5).all()
    covered = (summary["gain_mean"].abs() <= summary["gain_ci95"]).mean()
    assert 0.90 <= covered <= 0.99, covered
    # the per-seed rule on the same data: a gain invented from shared validation/test noise, about twice as large
    old = oracle_per_seed_rule(val, test).mean(axis=2).ravel()
    new = summary["gain_mean"].to_numpy()
    old_se = old.std(ddof=1) / math.sqrt(len(old))
    assert old.mean() > 0.035 and old.mean() / old_se > 10, (old.mean(), old_se)
    assert old.mean() > 1.5 * new.mean()
    old_ci = np.array([t_quantile_975(4) * g.std(ddof=1) / math.sqrt(5)
                       for g in oracle_per_seed_rule(val, test).reshape(-1, 5)])
    assert (np.abs(old) <= old_ci).mean() < covered
    # the permutation null reproduces what is left of the selection bias, and the default ρ has none
    new_se = new.std(ddof=1) / math.sqrt(len(new))
    assert abs(summary["null_gain_mean"].mean() - new.mean()) < 4 * new_se
    assert abs(summary["default_gain_mean"].mean()) < 4 * summary["default_gain_mean"].std() / math.sqrt(1200)
    assert 0.03 < (summary["null_p_value"] < 0.05).mean() < 0.08  # p-values calibrated under the null


def test_a_planted_effect_is_recovered():
    effect = {0.05: 0.3, 0.1: 0.3}
    runs, val, test = simulated(60, effect=effect, rng_seed=3)
    summary = summarize(select(runs, SIM_RULE), SIM_RULE, null=selection_null(runs, SIM_RULE, permutations=200))
    assert set(summary["rho_star"]) <= {0.05, 0.1}
    assert 0.27 < summary["gain_mean"].mean() < 0.36
    assert summary["default_gain_mean"].mean() == pytest.approx(0.3, abs=0.03)
    assert (summary["null_gain_mean"] < summary["gain_mean"]).mean() > 0.95
    assert summary["null_p_value"].median() < 0.05


def test_size_can_be_counted_in_non_zero_parameters():
    runs = frame(
        run("sgd", 1, 0, val=0.90, test=0.90, n_params=1000, n_nonzero=100),
        run("sam", 1, 0, rho=0.05, val=0.92, test=0.93, n_params=1000, n_nonzero=100),
        run("sgd", 4, 0, val=0.91, test=0.91, n_params=4000, n_nonzero=float("nan")),  # recorded no count: total
        run("sam", 4, 0, rho=0.05, val=0.93, test=0.95, n_params=4000, n_nonzero=float("nan")),
    )
    total = summarize(select(runs, RULE), RULE)
    nonzero_rule = SelectionRule(params="nonzero")
    nonzero = summarize(select(runs, nonzero_rule), nonzero_rule)
    assert total["n_params"].tolist() == [1000, 4000]
    assert nonzero["n_params"].tolist() == [100, 4000]
    assert nonzero["gain_mean"].tolist() == pytest.approx(total["gain_mean"].tolist())  # only the axis changes
    assert rho_table(runs, nonzero_rule)["n_params"].tolist()[0] == 100
    with pytest.raises(ConfigError, match="params"):
        SelectionRule.parse({"params": "weights"})


def _other_value(value):
    """A value different from `value` of the same kind (the frame is hand-built: it need not be a valid spec)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, (list, tuple)):
        return [*value, 0.5]
    if isinstance(value, dict):
        return {**value, "extra": 1}
    return "set"  # None


def _spec_row(flat: dict, **changes) -> dict:
    row = run(changes.pop("optim.name"), 1, changes.pop("train.seed"), rho=changes.pop("optim.rho", 0.0),
              val=changes.pop("val"), test=0.9)
    return {**flat, **row, **changes}


def test_runs_differing_in_any_runspec_field_are_never_averaged_as_one_setting():
    """Every field of RunSpec, read from the model itself (any section, present or future), checked one by one:
    two runs that differ only in it are refused with its name, or (baseline) kept as two settings chosen on
    validation; never averaged or picked by run-id order. Fields exempt from the check never enter the run id, so two
    runs differing only in them are the same run."""
    from samscale.selection.select import NUMBERLESS
    from samscale.spec.run import RunSpec, build_spec

    flat = RunSpec().flat()
    declared = {RULE.size_key, RULE.seed_key, *RULE.tune, *RULE.baseline, *RULE.treatment}
    checked = [field for field in flat if field not in declared and field not in NUMBERLESS]
    assert {"rl.buffer_size", "runtime.nproc", "data.options", "model.options", "optim.lr"} <= set(checked)
    for field in checked:
        other = _other_value(flat[field])
        base = {"optim.name": "sgd", "train.seed": 0, "val": 0.90}
        sam = {"optim.name": "sam", "optim.rho": 0.05, "train.seed": 0, "val": 0.91}
        # two SAM runs at one ρ and seed, differing only in `field`
        runs = frame(_spec_row(flat, **base), _spec_row(flat, **sam),
                     _spec_row(flat, **{**sam, "val": 0.95}, **{field: other}) | {"run_id": "sam-0-other"})
        with pytest.raises(ConfigError, match=re.escape(repr(field))):
            select(runs, RULE)
        # the same ρ on two seeds, differing only in `field`: not one setting either
        runs = frame(_spec_row(flat, **base), _spec_row(flat, **{**base, "train.seed": 1}), _spec_row(flat, **sam),
                     _spec_row(flat, **{**sam, "train.seed": 1}, **{field: other}) | {"run_id": "sam-1-other"})
        with pytest.raises(ConfigError, match=re.escape(repr(field))):
            select(runs, RULE)
        # two baseline runs at one seed differing only in `field`: two settings, the better on validation chosen
        runs = frame(_spec_row(flat, **base) | {"run_id": "b-z"},
                     _spec_row(flat, **{**base, "val": 0.95}, **{field: other}) | {"run_id": "a-better"},
                     _spec_row(flat, **sam))
        assert select(runs, RULE).iloc[0]["baseline_run_id"] == "a-better", field
    for field in NUMBERLESS:  # exempt: the run id ignores them
        spec = build_spec({})
        value = {"name": "x", "runtime.device": "cpu", "runtime.threads": 3, "runtime.keep_optimizer_state": True,
                 "analysis.what": ["lambda_max"], "analysis.n_examples": 7, "analysis.top_k": 2}[field]
        section, _, leaf = field.rpartition(".")
        changed = build_spec({section: {leaf: value}} if section else {leaf: value})
        assert changed.flat()[field] != spec.flat()[field] and changed.run_id == spec.run_id, field


def test_rho_star_at_the_edge_of_the_values_tried_is_flagged():
    rows = [run("sgd", k, 0, val=0.9, test=0.9) for k in (1, 2, 3, 4)]
    best = {1: 0.5, 2: 0.01, 3: 0.1}
    for k, chosen in best.items():
        rows += [run("sam", k, 0, rho=r, val=0.95 if r == chosen else 0.91, test=0.92) for r in (0.01, 0.1, 0.5)]
    rows += [run("sam", 4, 0, rho=0.1, val=0.95, test=0.92)]
    selected = select(frame(*rows), RULE)
    assert selected["rho_star"].tolist() == [0.5, 0.01, 0.1, 0.1]
    assert selected["rho_star_edge"].tolist() == ["largest tried", "smallest tried", "", "only value tried"]
    summary = summarize(selected, RULE)
    assert summary["rho_star_edge"].tolist() == ["largest tried", "smallest tried", "", "only value tried"]
    from samscale.report.trend_text import edge_texts

    assert edge_texts(summary, RULE) == {"ρ* at the grid edge": (
        "ρ* = 0.5 is the largest ρ tried at size = 1; ρ* = 0.01 is the smallest ρ tried at size = 2: the "
        "optimum may lie beyond the grid, so the tuned gain there may be understated")}
