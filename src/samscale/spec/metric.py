"""What a score column means: which way is better, how it is scaled and how a report names it.

Runs record scores per split (`train`, `val`, `test`) of a few kinds: `acc` (classification or per-token accuracy,
a fraction; reported in percent, gains in percentage points), `ap` (multilabel average precision as OGB defines it,
a fraction reported like accuracy), `loss` (the training objective; lower is better) and `return` (a
reinforcement-learning agent's mean episode return; higher is better, reported as it is). Selection and
reports ask this module rather than parsing names themselves, so a new kind of score is added here, once, in KINDS.
"""
from __future__ import annotations

from dataclasses import dataclass

SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class Kind:
    """One kind of score: its words in full and short, whether it is a fraction shown in percent, and its direction."""

    words: str
    short: str
    percent: bool
    higher_is_better: bool


KINDS = {
    "acc": Kind("accuracy", "acc.", percent=True, higher_is_better=True),
    "ap": Kind("average precision", "AP", percent=True, higher_is_better=True),
    "loss": Kind("loss", "loss", percent=False, higher_is_better=False),
    "return": Kind("episode return", "return", percent=False, higher_is_better=True),
}


@dataclass(frozen=True)
class Metric:
    """A score column such as `test_acc`: its split (`test`) and kind (`acc`)."""

    name: str

    def __post_init__(self) -> None:
        split, _, kind = self.name.partition("_")
        if split not in SPLIT_WORDS or kind not in KINDS:
            raise ValueError(f"unknown metric {self.name!r}; metrics are <split>_<kind> with split in "
                             f"{sorted(SPLIT_WORDS)} and kind in {sorted(KINDS)}")

    @property
    def split(self) -> str:
        return self.name.partition("_")[0]

    @property
    def kind(self) -> str:
        return self.name.partition("_")[2]

    @property
    def higher_is_better(self) -> bool:
        """Accuracy, average precision and return grow with quality; loss shrinks."""
        return KINDS[self.kind].higher_is_better

    @property
    def percent(self) -> bool:
        """Whether values are fractions reported in percent (and their differences in percentage points)."""
        return KINDS[self.kind].percent

    @property
    def scale(self) -> float:
        """Factor from stored value to reported value (fractions are shown in percent)."""
        return 100.0 if self.percent else 1.0

    @property
    def unit(self) -> str:
        """Unit of a reported value: '%' for fractions, '' otherwise."""
        return "%" if self.percent else ""

    @property
    def gain_unit(self) -> str:
        """Unit of a difference of two reported values: 'pp' (percentage points) for fractions, '' otherwise."""
        return "pp" if self.percent else ""

    def label(self, *, short: bool = False) -> str:
        """'test accuracy (%)', or with `short` 'test acc. (%)'; the split in words ('validation', 'training')."""
        split = "val." if short and self.split == "val" else SPLIT_WORDS[self.split]
        kind = KINDS[self.kind].short if short else KINDS[self.kind].words
        return f"{split} {kind}" + (f" ({self.unit})" if self.unit else "")

    def gain(self, treatment: float, baseline: float) -> float:
        """Treatment's advantage over the baseline, positive when the treatment is better (unscaled)."""
        return treatment - baseline if self.higher_is_better else baseline - treatment
