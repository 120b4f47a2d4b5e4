"""The paper's reported gains (Shin et al., arXiv 2311.17539; docs/PROTOCOL.md §5), as data to show beside ours.

Gains are SAM − SGD test accuracy in percentage points, keyed by the recipe's size on its model ladder (MLP width
multiplier k, ResNet base filters nf). The synthetic regression panel reports SGD − SAM test loss and gives only its
endpoints, by parameter count.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

COLUMNS = ("size", "n_params", "gain", "gain_low", "gain_high", "unit", "note")


class PaperGain(NamedTuple):
    """One reported gain: a size (or, where the paper gives only a count, n_params) and its value or range."""

    size: float
    gain: float
    low: float | None = None
    high: float | None = None
    note: str = ""
    n_params: float = math.nan


PAPER_GAINS: dict[str, tuple[str, tuple[PaperGain, ...]]] = {
    "mnist-mlp": ("pp", (
        PaperGain(0.25, 0.073), PaperGain(0.5, 0.063), PaperGain(1, 0.180), PaperGain(4, 0.190),
        PaperGain(10, 0.187),
    )),
    "cifar10-resnet18": ("pp", (
        PaperGain(4, 0.33, 0.30, 0.36, "reported as 0.30-0.36; midpoint shown"), PaperGain(8, 0.66),
        PaperGain(16, 0.44), PaperGain(32, 0.85), PaperGain(64, 0.97), PaperGain(128, 1.23), PaperGain(256, 1.02),
    )),
    "imagenet-resnet50": ("pp", (
        PaperGain(16, 0.03), PaperGain(32, 0.035), PaperGain(48, 0.175),
        PaperGain(56, 0.355, note="the paper labels this size like the previous one; nf=56 is the likely value"),
        PaperGain(64, 0.54),
    )),
    "synthetic": ("loss", (
        PaperGain(math.nan, 0.026, note="smallest model; SGD - SAM test loss", n_params=1e4),
        PaperGain(math.nan, 0.083, note="largest model; SGD - SAM test loss", n_params=1e5),
    )),
}


def paper_gains(recipe_name: str) -> pd.DataFrame | None:
    """The paper's gains for a recipe, one row per size (see COLUMNS), or None when it reports no numbers for it."""
    if recipe_name not in PAPER_GAINS:
        return None
    unit, gains = PAPER_GAINS[recipe_name]
    rows = [{
        "size": g.size,
        "n_params": g.n_params,
        "gain": g.gain,
        "gain_low": g.gain if g.low is None else g.low,
        "gain_high": g.gain if g.high is None else g.high,
        "unit": unit,
        "note": g.note,
    } for g in gains]
    return pd.DataFrame(rows, columns=list(COLUMNS))
