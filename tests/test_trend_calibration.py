"""Calibration of the trend statistics trend.json reports, measured by simulating whole studies.

Each simulated study has K sizes (parameters 10⁴…10⁶, log-spaced) and n seeds per size; the seed gains at size i
are drawn from N(μᵢ, σᵢ²) with σᵢ rising from 1 to 3 across the sizes (noise differs between sizes), μ either 0
(no effect) or a planted slope of 2 units per decade of parameters. The true slope is that of the least-squares line
through the μᵢ. A 95% interval must cover it in 93–97.5% of the studies of every cell.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from samscale.selection.select import SelectionRule
from samscale.selection.stats import t_quantile_975, t_quantile_975_real
from samscale.selection.trend import (
    slope_interval, smallest_p_value, spearman, spearman_p_value, trend_table,
)

STUDIES = 2000
SIZES = (3, 5, 7)
SEEDS = (2, 3, 5)
SLOPES = (0.0, 2.0)


def simulate(n_sizes: int, n_seeds: int, slope: float, studies: int, rng: np.random.Generator,
             noise: str = "rising") -> tuple[np.ndarray, np.ndarray]:
    """log10 #parameters [K] and gains [studies, K, n] of simulated studies (see the module docstring)."""
    log_params = np.linspace(4.0, 6.0, n_sizes)
    sigma = {"rising": np.linspace(1, 3, n_sizes), "falling": np.linspace(3, 1, n_sizes),
             "equal": np.ones(n_sizes), "v": 1 + 2 * np.abs(np.linspace(-1, 1, n_sizes))}[noise]
    gains = slope * log_params[None, :, None] + sigma[None, :, None] * rng.standard_normal((studies, n_sizes, n_seeds))
    return log_params, gains


def coverage(n_sizes: int, n_seeds: int, slope: float, studies: int, seed: int, noise: str = "rising") -> float:
    log_params, gains = simulate(n_sizes, n_seeds, slope, studies, np.random.default_rng(seed), noise)
    interval = slope_interval(log_params, gains)
    return float(np.mean((interval["low"] <= slope) & (slope <= interval["high"])))


def as_summary(log_params: np.ndarray, gains: np.ndarray) -> pd.DataFrame:
    """Simulated studies as one `summarize`-shaped frame, a study per group (the rule's group_by column)."""
    return pd.DataFrame([{"study": s, "model.size": k, "n_params": 10 ** log_params[k], "n_seeds": gains.shape[2],
                          "gain_seeds": list(gains[s, k])} for s in range(len(gains)) for k in range(len(log_params))])


@pytest.mark.parametrize("n_sizes", SIZES)
@pytest.mark.parametrize("n_seeds", SEEDS)
@pytest.mark.parametrize("slope", SLOPES)
def test_slope_interval_covers_the_true_slope_in_93_to_97_5_percent_of_studies(n_sizes, n_seeds, slope):
    measured = coverage(n_sizes, n_seeds, slope, STUDIES, seed=1000 * n_sizes + 10 * n_seeds + int(slope))
    assert 0.93 <= measured <= 0.975, f"{n_sizes} sizes × {n_seeds} seeds, slope {slope}: coverage {measured:.3f}"


@pytest.mark.parametrize("n_sizes", SIZES)
def test_trend_table_reports_the_calibrated_interval(n_sizes):
    """trend.json's interval is slope_interval's, for studies run through trend_table itself."""
    log_params, gains = simulate(n_sizes, 2, 2.0, 30, np.random.default_rng(n_sizes))
    rule = SelectionRule(group_by=["study"])
    groups = trend_table(as_summary(log_params, gains), rule)["groups"]
    direct = slope_interval(log_params, gains)
    assert [g["group"]["study"] for g in groups] == list(range(30))
    np.testing.assert_allclose([g["slope_ci95"] for g in groups], np.stack([direct["low"], direct["high"]], 1),
                               rtol=1e-12)
    np.testing.assert_allclose([g["slope_per_decade"] for g in groups], direct["slope"], rtol=1e-12)


@pytest.mark.parametrize("n_sizes", (5, 7))
def test_rank_test_rejects_no_more_often_than_5_percent_without_an_effect(n_sizes):
    """Exact permutation p-values of the seed-mean gains, no effect, noise differing between sizes."""
    log_params, gains = simulate(n_sizes, 2, 0.0, STUDIES, np.random.default_rng(50 + n_sizes))
    means = gains.mean(axis=2)
    rho = np.round(spearman(log_params, means), 12)
    p_of = {}
    for value in np.unique(rho):  # the p-value is a function of ρ: compute it once per value taken
        p_of[value] = spearman_p_value(log_params, means[np.argmax(rho == value)], np.random.default_rng(0))
    rejected = np.mean([p_of[value] <= 0.05 for value in rho])
    assert smallest_p_value(n_sizes) == pytest.approx(2 / math.factorial(n_sizes))
    assert rejected <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / STUDIES)
    assert rejected > 0  # 5 and 7 sizes can reach p < 0.05


def test_fractional_t_quantiles_match_closed_forms_and_the_table():
    # df = 1: Cauchy, tan(0.475π); df = 2: t = √(2·0.95² / (1 − 0.95²)); df = 4 and 30 from the integer table
    np.testing.assert_allclose(t_quantile_975_real([1.0, 2.0]),
                               [math.tan(0.475 * math.pi), math.sqrt(2 * 0.95**2 / (1 - 0.95**2))], rtol=1e-9)
    whole = np.arange(1, 41, dtype=float)
    np.testing.assert_allclose(t_quantile_975_real(whole), [t_quantile_975(int(d)) for d in whole], rtol=1e-7)
    # between whole df the quantile falls strictly; df ≤ 0 and NaN give NaN
    fine = t_quantile_975_real(np.linspace(0.5, 40, 400))
    assert np.all(np.diff(fine) < 0)
    assert np.isnan(t_quantile_975_real([0.0, -1.0, math.nan])).all()
    # df = 1/2: P(|T| > t) by numerical integration of the t density at the returned t is 0.05
    t = float(t_quantile_975_real(0.5))
    nu = 0.5
    grid = np.linspace(0, math.pi / 2, 200_001)[:-1]  # substitute x = tan(θ) on [0, ∞)
    x = np.tan(grid)
    dens = math.exp(math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2)) / math.sqrt(nu * math.pi) * \
        (1 + x * x / nu) ** (-(nu + 1) / 2) / np.cos(grid) ** 2
    inside = dens[x <= t].sum() * (grid[1] - grid[0]) * 2
    assert inside == pytest.approx(0.95, abs=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["rising", "falling", "equal", "v"])
def test_coverage_with_other_noise_patterns_and_more_studies(noise):
    """20,000 studies per cell. With EQUAL noise at 2 seeds the interval is conservative (about 97.5–98%:
    Welch–Satterthwaite degrees of freedom from 1-df variances are then low); it never undercovers."""
    table = {(k, n): coverage(k, n, 0.0, 20_000, seed=k * 10 + n, noise=noise) for k in SIZES for n in SEEDS}
    for (k, n), measured in table.items():
        upper = 0.985 if n == 2 else 0.975
        assert 0.93 <= measured <= upper, f"{noise} noise, {k} sizes × {n} seeds: coverage {measured:.3f}"
