"""The linear-stability bounds that apply to each optimizer's minima, and the table of measured values against them.

SGD: a ≤ 2/η and s₂ ≤ (1/η)·√(B(n − 1)/(n − B)), nothing on s₃, s₄ (inf). USAM: a ≤ (√(1 + 8ρ/η) − 1)/(2ρ),
s₂ ≤ √(2/(ηρ)) scaled for batch size B, and s₃ ≤ (2/(η²ρ))^{1/3}, s₄ ≤ √2/√(ηρ), which are derived for B = 1 only
(NaN otherwise). Normalized SAM: no bound is derived (NaN). Formulas: `samscale.theory.stability`.
"""
from __future__ import annotations

import math

import pandas as pd

from samscale.theory import (
    sgd_s2_bound,
    sgd_sharpness_bound,
    usam_s2_bound,
    usam_s3_bound,
    usam_s4_bound,
    usam_sharpness_bound,
)

QUANTITIES = ("sharpness", "s2", "s3", "s4")
LABELS = {"sharpness": "a = λ_max(H)", "s2": "s₂", "s3": "s₃", "s4": "s₄"}
SUMMARY_COLUMNS = ("problem", "optimizer", "quantity", "mean", "std", "n_seeds", "bound", "ratio", "within_bound",
                   "holds")


def stability_bounds(optimizer: str, eta: float, rho: float, batch_size: int, n: int) -> dict[str, float]:
    """Bounds on sharpness, s2, s3, s4 for the minima of `optimizer` ("sgd", "usam" or "sam") at η, ρ, B, n."""
    if optimizer == "sgd":
        return {"sharpness": sgd_sharpness_bound(eta), "s2": sgd_s2_bound(eta, batch_size, n),
                "s3": math.inf, "s4": math.inf}
    if optimizer == "usam":
        single = batch_size == 1
        return {"sharpness": usam_sharpness_bound(eta, rho), "s2": usam_s2_bound(eta, rho, batch_size, n),
                "s3": usam_s3_bound(eta, rho) if single else math.nan,
                "s4": usam_s4_bound(eta, rho) if single else math.nan}
    if optimizer == "sam":
        return dict.fromkeys(QUANTITIES, math.nan)
    raise ValueError(f"no stability bounds for optimizer {optimizer!r}; valid: sgd, usam, sam")


def summarize_against_bounds(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (problem, optimizer, quantity): mean and sample std over seeds, the bound, mean/bound, and how
    many seeds lie within it (`holds` when all do; empty where no bound applies). Diverged runs are left out."""
    rows = []
    finished = runs[runs["status"] == "complete"] if "status" in runs else runs.iloc[0:0]
    for (problem, optimizer), group in finished.groupby(["problem", "optimizer"], sort=False):
        for quantity in QUANTITIES:
            values = group[quantity].astype(float)
            bound = float(group[f"bound_{quantity}"].iloc[0])
            known = not math.isnan(bound)
            within = int((values <= bound).sum())
            rows.append({
                "problem": problem,
                "optimizer": optimizer,
                "quantity": quantity,
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "n_seeds": len(values),
                "bound": bound,
                "ratio": float(values.mean()) / bound if known else math.nan,
                "within_bound": f"{within}/{len(values)}" if known else None,
                "holds": within == len(values) if known else None,
            })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
