"""Small statistics shared by selection, its null and the trend: Student-t quantiles, std and t intervals."""
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
    z = _Z975
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


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
