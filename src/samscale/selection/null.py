"""The gain the selection rule reports when the treatment has no effect, measured on the study's own runs.

Method (a within-seed permutation null): under no effect, a size's baseline run and its treatment runs at every
candidate setting are exchangeable within a seed. For each permutation, the K + 1 runs of every seed are shuffled
between the labels "baseline" and the K settings, the whole selection is redone (setting chosen on the seed-mean
validation score, every seed evaluated at it) and the mean gain over seeds recorded. `null_gain_mean` is the mean
over permutations: the gain the selection finds from the runs' own seed-to-seed noise alone, including the part of
that noise shared by validation and test. `null_p_value` is the one-sided permutation p-value of the observed gain,
(1 + #{null ≥ observed}) / (1 + permutations). Only seeds with a complete, scored run at the chosen baseline
setting and at every eligible treatment setting enter (the balanced part of the size). A real effect also enters
the shuffled labels, so with an effect the null mean is pulled towards it (the test is then conservative).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from samscale.selection.select import COMPLETE, Prepared, SelectionRule, prepare

PERMUTATIONS = 1000
MAX_ELEMENTS = 4_000_000  # permutations × seeds × settings per size: fewer permutations for very large sizes
MIN_PERMUTATIONS = 100
SEED = 20231129
COLUMNS = ("null_gain_mean", "null_p_value", "null_n_seeds", "null_n_settings")


def selection_null(frame: pd.DataFrame, rule: SelectionRule, *, permutations: int = PERMUTATIONS, seed: int = SEED,
                   prep: Prepared | None = None) -> pd.DataFrame:
    """Per (group…, size): the permutation null of the tuned gain (see the module docstring); deterministic."""
    if int(permutations) != permutations or permutations < 1:
        raise ValueError(f"permutations must be a positive integer, got {permutations!r}")
    prep = prep or prepare(frame, rule)
    cell, seed_key = prep.cell, rule.seed_key
    slots = _slots(prep)
    if slots.empty:
        return pd.DataFrame(columns=[*cell, *COLUMNS])
    wide = slots.set_index([*cell, seed_key, "_slot"])[["_score", "_metric"]].unstack("_slot").sort_index()
    scores, metrics = wide["_score"].to_numpy(dtype=float), wide["_metric"].to_numpy(dtype=float)
    n_slots = slots.groupby([slots[c] for c in cell], dropna=False, sort=True)["_slot"].max() + 1
    positions = wide.index.to_frame(index=False).groupby(cell, dropna=False, sort=True).indices
    sign_score = 1.0 if rule.maximize else -1.0
    sign_metric = 1.0 if rule.measure.higher_is_better else -1.0
    results, buckets = {}, {}
    for key, count in n_slots.items():
        at = positions[key]
        val, test = scores[at, :count], metrics[at, :count]
        balanced = np.isfinite(val).all(axis=1) & np.isfinite(test).all(axis=1)
        val, test = sign_score * val[balanced], sign_metric * test[balanced]
        results[key] = [math.nan, math.nan, int(len(val)), int(count - 1)]
        if count >= 2 and len(val) >= 2:  # cells of one shape are permuted together
            buckets.setdefault(val.shape, []).append((key, val, test))
    rng = np.random.default_rng(seed)
    for shape, cells in sorted(buckets.items()):
        draws = int(min(permutations, max(MIN_PERMUTATIONS, MAX_ELEMENTS // (shape[0] * shape[1]))))
        val, test = np.stack([c[1] for c in cells]), np.stack([c[2] for c in cells])
        observed = _tuned_gain(val, test)
        null = _permuted_gains(val, test, draws, rng)  # [cells, draws]
        p_values = (1 + np.sum(null >= observed[:, None] - 1e-12, axis=1)) / (1 + draws)
        for (key, *_), mean, p_value in zip(cells, null.mean(axis=1), p_values):
            results[key][:2] = float(mean), float(p_value)
    rows = [{**dict(zip(cell, key if isinstance(key, tuple) else (key,))), **dict(zip(COLUMNS, values))}
            for key, values in results.items()]
    return pd.DataFrame(rows, columns=[*cell, *COLUMNS])


def _slots(prep: Prepared) -> pd.DataFrame:
    """Complete runs at the chosen baseline setting (slot 0) and at each eligible treatment setting (slots 1…K)."""
    means = prep.means
    base = means[(means["_arm"] == "baseline") & means["_chosen"]].assign(_slot=0)
    treat = means[(means["_arm"] == "treatment") & means["_eligible"]].copy()
    treat["_slot"] = treat.groupby([treat[c] for c in prep.cell], dropna=False)["_cfg"].rank(method="dense")
    slots = pd.concat([base, treat])[[*prep.cell, "_arm", "_cfg", "_slot"]]
    per_cell = slots.groupby([slots[c] for c in prep.cell], dropna=False)["_slot"]
    slots = slots[(per_cell.transform("min") == 0) & (per_cell.transform("max") > 0)]  # both arms present
    runs = prep.arms[prep.arms["status"] == COMPLETE].sort_values("run_id", kind="mergesort")
    runs = runs.drop_duplicates([*prep.keys, "_arm", "_cfg"])
    out = runs.merge(slots, on=[*prep.cell, "_arm", "_cfg"], how="inner")
    out["_slot"] = out["_slot"].astype(int)
    return out


def _tuned_gain(val: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Mean gain over seeds of the selection on [draw, seed, slot] arrays (slot 0 baseline; larger is better)."""
    chosen = np.argmax(val[:, :, 1:].mean(axis=1), axis=1) + 1  # first of ties: the smallest setting
    picked = np.take_along_axis(test, np.broadcast_to(chosen[:, None, None], (len(test), test.shape[1], 1)), axis=2)
    return (picked[:, :, 0] - test[:, :, 0]).mean(axis=1)


def _permuted_gains(val: np.ndarray, test: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """[cells, draws] tuned gains after shuffling each seed's runs between the slots, in memory-bounded blocks."""
    cells, seeds, slots = val.shape
    per_draw = seeds * slots
    block = max(1, MAX_ELEMENTS // (per_draw * draws))  # cells per block
    out = np.empty((cells, draws))
    for c0 in range(0, cells, block):
        v, t = val[c0:c0 + block].ravel(), test[c0:c0 + block].ravel()
        n = len(v) // per_draw
        offsets = (np.arange(n)[:, None, None, None] * per_draw + np.arange(seeds)[None, None, :, None] * slots)
        step = max(1, MAX_ELEMENTS // (per_draw * n))  # draws per step
        for d0 in range(0, draws, step):
            shape = (n, min(step, draws - d0), seeds, slots)
            where = rng.permuted(np.broadcast_to(np.arange(slots), shape), axis=3) + offsets  # flat run positions
            chosen = np.argmax(v[where[..., 1:]].mean(axis=2), axis=2) + 1  # [cells, draws]
            at = np.take_along_axis(where, np.broadcast_to(chosen[:, :, None, None], (*shape[:3], 1)), axis=3)
            out[c0:c0 + n, d0:d0 + shape[1]] = (t[at[..., 0]] - t[where[..., 0]]).mean(axis=2)
    return out
