"""The paper's reported gains (Shin et al., arXiv 2311.17539; docs/PROTOCOL.md §5), as data to show beside ours.

Vision panels (v1 Fig. 3 = v2+ Fig. 1(a)): SAM − SGD test accuracy in percentage points, keyed by the recipe's size
on its model ladder (MLP width multiplier k, ResNet base filters nf). The v2+ panels of Fig. 1(a) give values by
parameter count, read off the figure with their bands: synthetic regression (SGD − SAM test loss), part-of-speech
tagging and SST-2 (accuracy, pp), molecular graphs (average precision, probably ×100, so pp of AP) and Atari
(episode return). Each panel names the metric kind its values measure (`kind`): a report shows them only beside
gains of the same kind.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

COLUMNS = ("size", "n_params", "gain", "gain_low", "gain_high", "unit", "kind", "note")


class PaperGain(NamedTuple):
    """One reported gain: a size (or, where the paper gives only a count, n_params) and its value or range."""

    size: float
    gain: float
    low: float | None = None
    high: float | None = None
    note: str = ""
    n_params: float = math.nan


def _by_count(millions: float, gain: float, low: float | None = None, high: float | None = None,
              note: str = "") -> PaperGain:
    """A value the paper places by parameter count (in millions), with its band when it shows one."""
    return PaperGain(math.nan, gain, low, high, note, n_params=millions * 1e6)


FIG_1A = "v2+ Fig. 1(a), read off the figure"
PAPER_GAINS: dict[str, tuple[str, str, tuple[PaperGain, ...]]] = {
    "mnist-mlp": ("pp", "acc", (
        PaperGain(0.25, 0.073), PaperGain(0.5, 0.063), PaperGain(1, 0.180), PaperGain(4, 0.190),
        PaperGain(10, 0.187),
    )),
    "cifar10-resnet18": ("pp", "acc", (
        PaperGain(4, 0.33, 0.30, 0.36, "reported as 0.30-0.36; midpoint shown"), PaperGain(8, 0.66),
        PaperGain(16, 0.44), PaperGain(32, 0.85), PaperGain(64, 0.97), PaperGain(128, 1.23), PaperGain(256, 1.02),
    )),
    "imagenet-resnet50": ("pp", "acc", (
        PaperGain(16, 0.03), PaperGain(32, 0.035), PaperGain(48, 0.175),
        PaperGain(56, 0.355, note="the paper labels this size like the previous one; nf=56 is the likely value"),
        PaperGain(64, 0.54),
    )),
    "synthetic": ("loss", "loss", tuple(
        _by_count(count / 100, gain, note=f"SGD - SAM test loss; {FIG_1A}, band about ±0.002-0.004")
        for count, gain in zip(range(1, 11), (0.026, 0.029, 0.035, 0.047, 0.056, 0.062, 0.063, 0.074, 0.080, 0.083))
    )),
    "pos-transformer": ("pp", "acc", tuple(_by_count(*values, note=f"SAM-AdamW - AdamW; {FIG_1A}") for values in (
        (5.5, -0.10, -0.38, 0.18), (13.5, 0.65, 0.37, 0.93), (23.7, 0.83, 0.66, 1.00), (36.3, 1.07, 0.69, 1.44),
        (51.3, 1.15, 1.04, 1.25),
    ))),
    "sst2-lstm": ("pp", "acc", tuple(_by_count(*values, note=f"the paper's SAM-SGD - SGD; {FIG_1A}") for values in (
        (0.5, 0.23, -0.06, 0.52), (1.1, 0.27, 0.04, 0.49), (2.5, 0.50, 0.17, 0.82), (5.8, 1.22, 1.09, 1.35),
        (10.0, 1.00, 0.69, 1.30), (15.1, 1.15, 0.88, 1.41),
    ))),
    "graph-gcn": ("pp", "ap", tuple(
        _by_count(*values, note=f"average precision gain, probably ×100 (ogbg-molpcba); {FIG_1A}") for values in (
            (0.2, -0.12, -0.46, 0.09), (0.7, 0.235, -0.14, 0.60), (2.7, 0.47, 0.33, 0.61),
        ))),
    "atari-dqn": ("", "return", tuple(
        _by_count(*values, note=f"raw score gain; games, frames and seeds not published; {FIG_1A}") for values in (
            (0.4, 28, 8, 48), (1.7, 17, -22, 58), (3.8, 163, 98, 228), (6.7, 122, 10, 235),
        ))),
}


def paper_gains(recipe_name: str, kind: str | None = None) -> pd.DataFrame | None:
    """The paper's gains for a recipe, one row per size (see COLUMNS), or None when it reports no numbers for it
    (or, with `kind`, none of that metric kind: a study measuring accuracy is not shown the paper's AP gains)."""
    if recipe_name not in PAPER_GAINS or (kind is not None and PAPER_GAINS[recipe_name][1] != kind):
        return None
    unit, kind, gains = PAPER_GAINS[recipe_name]
    rows = [{
        "size": g.size,
        "n_params": g.n_params,
        "gain": g.gain,
        "gain_low": g.gain if g.low is None else g.low,
        "gain_high": g.gain if g.high is None else g.high,
        "unit": unit,
        "kind": kind,
        "note": g.note,
    } for g in gains]
    return pd.DataFrame(rows, columns=list(COLUMNS))
