"""The cost table: per (size, arm) the seed-mean test accuracy, gain over SGD, share of SAM's gain, and cost.

A pure function of a runs frame (`RunStore.runs_frame`). An arm is an optimizer name, suffixed `-matched` when it
trained longer than the study's base epochs (the run given SAM's gradient-evaluation budget in epochs). Gains are
in percentage points of final test accuracy against SGD at the base epochs, averaged over seeds first; nothing here
is chosen on test (ρ and every other setting are fixed by the study).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from samscale.errors import ConfigError

KEEP = 0.8
"""A variant "keeps" SAM's gain at a size when its gain is at least this share of SAM's."""
COLUMNS = ["model.size", "n_params", "arm", "seeds", "test_acc", "test_acc_sd", "gain", "share_of_sam_gain",
           f"keeps_{int(KEEP * 100)}pct", "grad_evals", "evals_vs_sam", "gain_per_1k_evals", "optimizer_seconds",
           "seconds_vs_sam", "sequential_grad_evals", "optimizer_state_mb"]


def arm_names(frame: pd.DataFrame, base_epochs: int) -> pd.Series:
    """Each run's arm: its optimizer name, with `-matched` when it trained more than `base_epochs` epochs."""
    longer = frame["train.epochs"].astype(int) > base_epochs
    return frame["optim.name"].astype(str) + np.where(longer, "-matched", "")


def cost_table(frame: pd.DataFrame, base_epochs: int) -> pd.DataFrame:
    """One row per (size, arm) of the complete runs, sizes by parameter count, SGD and SAM first in each size."""
    done = frame[frame["status"] == "complete"].copy()
    if done.empty:
        raise ConfigError("no complete runs: nothing to compare")
    done["arm"] = arm_names(done, base_epochs)
    done["test_acc"] = 100 * pd.to_numeric(done["final_test_acc"], errors="coerce")
    for column in ("grad_evals", "sequential_grad_evals", "optimizer_seconds", "optimizer_state_mb"):
        done[column] = pd.to_numeric(done.get(column), errors="coerce")
    rows = []
    for size, runs in done.groupby("model.size", sort=False):
        stats = runs.groupby("arm").agg(
            n_params=("n_params", "first"), seeds=("train.seed", "nunique"), test_acc=("test_acc", "mean"),
            test_acc_sd=("test_acc", "std"), grad_evals=("grad_evals", "mean"),
            sequential_grad_evals=("sequential_grad_evals", "mean"), optimizer_seconds=("optimizer_seconds", "mean"),
            optimizer_state_mb=("optimizer_state_mb", "mean"))
        if "sgd" not in stats.index or "sam" not in stats.index:
            continue
        sgd, sam = stats.loc["sgd"], stats.loc["sam"]
        stats["gain"] = stats["test_acc"] - sgd["test_acc"]
        sam_gain = sam["test_acc"] - sgd["test_acc"]
        stats["share_of_sam_gain"] = stats["gain"] / sam_gain if sam_gain > 0 else np.nan
        stats[f"keeps_{int(KEEP * 100)}pct"] = stats["share_of_sam_gain"] >= KEEP
        stats["evals_vs_sam"] = stats["grad_evals"] / sam["grad_evals"]
        stats["gain_per_1k_evals"] = stats["gain"] / (stats["grad_evals"] / 1000)
        stats["seconds_vs_sam"] = stats["optimizer_seconds"] / sam["optimizer_seconds"]
        stats["model.size"] = size
        order = ["sgd", "sam"] + sorted(a for a in stats.index if a not in ("sgd", "sam"))
        rows.append(stats.loc[order].reset_index())
    if not rows:
        raise ConfigError("no size has both complete SGD and SAM runs at the base epochs")
    table = pd.concat(rows, ignore_index=True)
    table = table.sort_values("n_params", kind="mergesort").reset_index(drop=True)
    return table[COLUMNS]


def keeps_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm (not SGD or SAM): the sizes where it keeps ≥ 80 % of SAM's gain and its cost as a share of SAM's."""
    keep = f"keeps_{int(KEEP * 100)}pct"
    rows = []
    for arm, runs in table[~table["arm"].isin(["sgd", "sam"])].groupby("arm", sort=True):
        kept = runs[runs[keep]]
        rows.append({"arm": arm, "sizes keeping ≥80 % of SAM's gain": [*kept["model.size"]] or "none",
                     "of sizes": len(runs), "share of SAM's gain (per size)": [*runs["share_of_sam_gain"].round(2)],
                     "grad evals vs SAM (per size)": [*runs["evals_vs_sam"].round(3)],
                     "wall time vs SAM (per size)": [*runs["seconds_vs_sam"].round(2)]})
    return pd.DataFrame(rows)
