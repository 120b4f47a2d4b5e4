"""Trend statistics of the gain against model size: Spearman, its permutation p-value, slope per decade."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from samscale.report.trend_text import TOO_FEW, trend_sentence
from samscale.selection.select import SelectionRule
from samscale.selection.stats import t_quantile_975_real
from samscale.selection.trend import slopes, spearman, spearman_p_value, trend_table, verdict


def by_hand_spearman(x: list[float], y: list[float]) -> float:
    """1 − 6 Σd² / (n (n² − 1)) on ranks (valid without ties)."""
    rank = lambda v: {value: i + 1 for i, value in enumerate(sorted(v))}  # noqa: E731
    rx, ry = rank(x), rank(y)
    d2 = sum((rx[a] - ry[b]) ** 2 for a, b in zip(x, y))
    n = len(x)
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_spearman_matches_hand_computation_with_and_without_ties():
    x, y = [1e3, 1e4, 1e5, 1e6, 1e7], [0.2, 0.1, 0.4, 0.3, 0.5]
    assert float(spearman(np.log10(x), np.array(y))) == pytest.approx(0.8)  # Σd² = 4: 1 − 24/120
    assert by_hand_spearman(x, y) == pytest.approx(0.8)
    # ties share their average rank: y ranks (1.5, 1.5, 3, 4); Pearson of the ranks = 4.5 / √(5 · 4.5) = 3/√10
    assert float(spearman(np.arange(4.0), np.array([1.0, 1.0, 2.0, 3.0]))) == pytest.approx(3 / math.sqrt(10))
    assert math.isnan(float(spearman(np.arange(3.0), np.ones(3))))


def test_exact_p_value_enumerates_all_24_orderings_of_four_sizes():
    rng = np.random.default_rng(0)
    x = np.log10([1e3, 1e4, 1e5, 1e6])
    assert spearman_p_value(x, np.array([0.1, 0.2, 0.3, 0.4]), rng) == pytest.approx(2 / 24)  # ρ = ±1 only
    y = [0.2, 0.1, 0.3, 0.4]  # one adjacent swap: ρ = 1 − 6·2/60 = 0.8
    counted = sum(abs(by_hand_spearman(list(x), [y[i] for i in order])) >= 0.8 - 1e-12
                  for order in itertools.permutations(range(4)))
    assert counted == 8  # identity, 3 adjacent swaps, and their 4 reversals
    assert spearman_p_value(x, np.array(y), rng) == pytest.approx(counted / 24)


def test_monte_carlo_p_value_beyond_eight_sizes_is_seeded_and_small_for_a_monotone_trend():
    x = np.arange(10.0)
    first = spearman_p_value(x, x**2, np.random.default_rng(5))
    assert first == spearman_p_value(x, x**2, np.random.default_rng(5))
    assert 0 < first <= 2 / 10_001  # exact value is 2/10! ≈ 5.5e-7; the estimate is (1 + hits)/(1 + draws)


def test_slope_is_least_squares_per_decade():
    log_params = np.log10([1e3, 1e4, 1e5])
    assert float(slopes(log_params, np.array([0.1, 0.3, 0.5]))) == pytest.approx(0.2)
    # OLS by hand for unequal spacing: x = (3, 4, 6), y = (0, 1, 1): Sxy = 8/9 − 1/9 + 5/9 = 4/3, Sxx = 14/3 → 2/7
    assert float(slopes(np.array([3.0, 4.0, 6.0]), np.array([0.0, 1.0, 1.0]))) == pytest.approx(2 / 7)


def summary(gains: dict[float, list[float]], **group) -> pd.DataFrame:
    return pd.DataFrame([{**group, "model.size": k, "n_params": 1000 * 10**k, "n_seeds": len(g), "gain_seeds": g}
                         for k, g in gains.items()])


def test_trend_table_per_group_with_welch_interval_and_too_few_sizes():
    rule = SelectionRule(group_by=["data.label_noise"])
    rising = summary({0: [0.1, 0.1, 0.1], 1: [0.3, 0.3, 0.3], 2: [0.5, 0.5, 0.5]}, **{"data.label_noise": 0.0})
    noisy = summary({0: [0.0, 0.2, 0.1], 1: [0.5, 0.1, 0.3], 2: [0.2, 0.6, 0.4], 3: [0.9, 0.3, 0.6]},
                    **{"data.label_noise": 0.2})
    short = summary({0: [0.1, 0.2], 1: [0.3, 0.1]}, **{"data.label_noise": 0.4})
    trend = trend_table(pd.concat([rising, noisy, short], ignore_index=True), rule)
    first, second, third = trend["groups"]
    assert first["group"] == {"data.label_noise": 0.0} and (first["n_sizes"], first["n_seeds"]) == (3, 3)
    assert first["spearman"] == pytest.approx(1.0) and first["p_value"] == pytest.approx(2 / 6)
    assert first["slope_per_decade"] == pytest.approx(0.2)
    assert first["slope_ci95"] is None and "seeds agree exactly" in first["note"]  # no seed variance: no interval
    assert first["p_value_min"] == pytest.approx(1 / 3) and not first["rank_test_can_reach_05"]
    assert not first["enough"] and "cannot reach p < 0.05" in first["note"]
    means = [0.1, 0.3, 0.4, 0.6]
    assert second["slope_per_decade"] == pytest.approx(float(slopes(np.arange(4.0), np.array(means))))
    # by hand: x = 0..3, weights (x − 1.5)/5 = (−0.3, −0.1, 0.1, 0.3); seed variances 0.01, 0.04, 0.04, 0.09 over
    # 3 seeds; aᵢ = wᵢ² sᵢ²/3; df = (Σ aᵢ)² / Σ (aᵢ²/2)
    parts = np.array([0.09 * 0.01, 0.01 * 0.04, 0.01 * 0.04, 0.09 * 0.09]) / 3
    df = parts.sum() ** 2 / (parts**2 / 2).sum()
    half = float(t_quantile_975_real(df)) * math.sqrt(parts.sum())
    assert second["slope_df"] == pytest.approx(df) and second["slope_se"] == pytest.approx(math.sqrt(parts.sum()))
    assert second["slope_ci95"] == pytest.approx([0.16 - half, 0.16 + half])
    assert second["spearman"] == pytest.approx(1.0) and second["p_value"] == pytest.approx(2 / 24)
    assert second["p_value_min"] == pytest.approx(1 / 12) and not second["enough"]
    assert third["spearman"] is None and third["slope_ci95"] is None and not third["enough"]
    assert third["verdict"] == "undecided"
    assert trend == trend_table(pd.concat([rising, noisy, short], ignore_index=True), rule)  # seeded
    assert TOO_FEW in trend_sentence(third, "pp")
    assert second["verdict"] == "no_trend" and second["slope_ci95"][0] < 0  # 3 seeds of spread 0.1–0.3: wide
    # 4 sizes with an interval excluding 0: no ordering of 4 sizes can reach p < 0.05, so no "grows" verdict
    tight = {**second, "slope_ci95": [0.05, 0.27]}
    tight.update(verdict(tight))
    text = trend_sentence(tight, "pp")
    assert tight["verdict"] == "slope_only" and "fitted slope is positive" in text and "+0.160 pp" in text
    assert "smallest possible p is 2/4! = 0.0833" in text and "grows with size" not in text
    grows = {**tight, "n_sizes": 5, "p_value": 0.0167, "p_value_min": 2 / 120, "rank_test_can_reach_05": True}
    assert "grows with size" in trend_sentence({**grows, **verdict(grows)}, "pp")
    wide = {**second, "slope_ci95": [-0.1, 0.3]}
    assert "no trend shown" in trend_sentence({**wide, **verdict(wide)}, "pp")


def test_study_without_groups_has_one_entry_and_an_empty_study_has_no_statistics():
    rule = SelectionRule()
    one = trend_table(summary({0: [0.1, 0.2], 1: [0.2, 0.1], 2: [0.0, 0.1]}), rule)
    assert len(one["groups"]) == 1 and one["groups"][0]["group"] == {}
    # means 0.15, 0.15, 0.05 → ranks 2.5, 2.5, 1; centred (0.5, 0.5, −1) vs (−1, 0, 1): −1.5 / √(2 · 1.5)
    assert one["groups"][0]["spearman"] == pytest.approx(-math.sqrt(3) / 2)
    empty = trend_table(pd.DataFrame(), rule)
    assert empty["groups"][0]["n_sizes"] == 0 and empty["groups"][0]["spearman"] is None


def test_no_effect_studies_are_rarely_said_to_have_a_slope():
    """The false statement of the percentile bootstrap: 3 sizes, 2 seeds, gains N(0, 1), no effect. Its "95%"
    interval excluded 0 in about a third of such studies and the report then called the slope positive or
    negative. The calibrated interval excludes 0 in about 5% (a share ≤ 7.5% of 600 studies: 3.6 standard errors
    above 5%)."""
    rng = np.random.default_rng(7)
    gains = rng.standard_normal((600, 3, 2))
    rule = SelectionRule(group_by=["study"])
    rows = [{"study": s, "model.size": k, "n_params": 10 ** (4 + k), "n_seeds": 2, "gain_seeds": list(gains[s, k])}
            for s in range(600) for k in range(3)]
    groups = trend_table(pd.DataFrame(rows), rule)["groups"]
    excluded = [g["slope_ci95"][0] > 0 or g["slope_ci95"][1] < 0 for g in groups]
    claimed = ["excludes 0" in trend_sentence(g, "pp") and "includes 0" not in trend_sentence(g, "pp")
               for g in groups]
    assert excluded == claimed
    assert np.mean(excluded) <= 0.075
    assert not any("grows with size" in trend_sentence(g, "pp") for g in groups)  # 3 sizes: p ≥ 1/3 always
