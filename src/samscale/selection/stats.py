"""Small statistics shared by selection, its null and the trend: Student-t quantiles (whole and fractional degrees of
freedom), std and t intervals."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30.
_T975 = (
    12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243, 2.3060041, 2.2621572, 2.2281389,
    2.2009852, 2.1788128, 2.1603687, 2.1447867, 2.1314495, 2.1199053, 2.1098156, 2.1009220, 2.0930241, 2.0859634,
    2.0796138, 2.0738731, 2.0686576, 2.0638986, 2.0595386, 2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725,
)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile t_{0.975, df}: a table for df ≤ 30, Cornish–Fisher expansion beyond.

    The expansion (four terms in 1/df) is within 1e-7 of the exact quantile for every df > 30.
    """
    if int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    df = int(df)
    if df <= len(_T975):
        return _T975[df - 1]
    return float(_cornish_fisher(df))


def t_quantile_975_real(df: np.ndarray | float) -> np.ndarray:
    """t_{0.975, df} for real (fractional) degrees of freedom df > 0, elementwise; NaN where df is not > 0.

    Below 30 degrees of freedom the two-sided tail P(|T| > t) = I_{df/(df+t²)}(df/2, 1/2) (regularized incomplete
    beta function) is solved for 0.05 by Newton's method from t = z_{0.975}: the tail is convex and decreasing in t,
    so the iterates rise monotonically to the root. From 30 on, the Cornish–Fisher expansion of `t_quantile_975`
    holds for fractional df as well. Welch–Satterthwaite degrees of freedom are fractional, hence this function.
    """
    df = np.asarray(df, dtype=float)
    out = np.full(df.shape, np.nan)
    large = np.isfinite(df) & (df >= len(_T975))
    out[large] = _cornish_fisher(df[large])
    small = np.isfinite(df) & (df > 0) & ~large
    if small.any():
        nu = df[small]
        lgamma = np.vectorize(math.lgamma, otypes=[float])
        log_density_scale = lgamma((nu + 1) / 2) - lgamma(nu / 2) - 0.5 * np.log(nu * math.pi)
        t = np.full(nu.shape, _Z975)
        for _ in range(40):
            tail = _beta_regularized(nu / 2, 0.5, nu / (nu + t * t))
            density = np.exp(log_density_scale - (nu + 1) / 2 * np.log1p(t * t / nu))
            step = (tail - 0.05) / (2 * density)
            t = t + step
            if np.all(np.abs(step) <= 1e-12 * t):
                break
        out[small] = t
    return out


def _cornish_fisher(df: np.ndarray | float) -> np.ndarray | float:
    """t_{0.975, df} by the Cornish–Fisher expansion in 1/df (four terms; within 1e-7 for df ≥ 30)."""
    z = _Z975
    terms = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


def _beta_regularized(a: np.ndarray, b: float, x: np.ndarray) -> np.ndarray:
    """I_x(a, b) elementwise for 0 < x < 1 by its continued fraction (modified Lentz, iterated until every element
    has converged), using I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction would converge slowly."""
    a, x = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(x, dtype=float))
    b = np.full(a.shape, float(b))
    flip = x > (a + 1) / (a + b + 2)
    p, q, y = np.where(flip, b, a), np.where(flip, a, b), np.where(flip, 1 - x, x)
    lgamma = np.vectorize(math.lgamma, otypes=[float])
    front = np.exp(lgamma(p + q) - lgamma(p) - lgamma(q) + p * np.log(y) + q * np.log1p(-y)) / p
    tiny = 1e-300
    c, d = np.ones_like(y), 1 - (p + q) * y / (p + 1)
    d = 1 / np.where(np.abs(d) < tiny, tiny, d)
    fraction = d.copy()
    for m in range(1, 1000):
        change = np.zeros_like(y)
        for numerator in (m * (q - m) * y / ((p + 2 * m - 1) * (p + 2 * m)),
                          -(p + m) * (p + q + m) * y / ((p + 2 * m) * (p + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1 + numerator / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            fraction *= c * d
            change = np.maximum(change, np.abs(c * d - 1))
        if change.max() < 1e-15:
            break
    value = front * fraction
    return np.where(flip, 1 - value, value)


def grouped_stats(values: pd.Series, by: list[pd.Series] | list[str], prefix: str) -> pd.DataFrame:
    """Per group of `values` (NaN dropped): `<prefix>_mean`, `_std` (ddof=1; 0 for one value), `_ci95` (Student-t
    95% half-width; NaN below two values) and `n`. Groups whose values are all NaN get n = 0 and NaN statistics."""
    grouped = values.groupby(by, dropna=False, sort=False)
    stats = grouped.agg(["mean", "std", "count"])
    n = stats["count"].astype(int)
    std = stats["std"].where(n != 1, 0.0)
    t = n.map(lambda k: t_quantile_975(k - 1) if k > 1 else math.nan)
    return pd.DataFrame({f"{prefix}_mean": stats["mean"], f"{prefix}_std": std,
                         f"{prefix}_ci95": t * std / np.sqrt(n.where(n > 0)), f"{prefix}_n": n})
