"""A finished run's summary: its final-epoch metrics, and its metrics at the epoch with the best validation score.

Supervised runs and DQN runs share it; only the validation score that picks the best epoch differs
(`validation_score`): average precision for multilabel tasks, accuracy for classification and tagging, loss for
regression, and the evaluation return for DQN runs.
"""
from __future__ import annotations

import math
from typing import Any

from samscale.data.dataset import ACCURACY_TASKS
from samscale.spec.metric import Metric

NOT_METRICS = ("epoch", "lr", "seconds")


def validation_score(task: str) -> str:
    """The history column that picks a supervised run's best epoch for its dataset's `task`."""
    if task == "multilabel":
        return "val_ap"
    return "val_acc" if task in ACCURACY_TASKS else "val_loss"


def summarize_history(history: list[dict[str, float]], *, score: str) -> dict[str, Any]:
    """`final_*` metrics of the last epoch, `epochs_done`, and `best_epoch` with the `best_val_*` / `best_test_*`
    metrics of the epoch whose `score` column (e.g. "val_acc") is best in its direction (`samscale.spec.metric`).
    Epochs without that column (a diverged last epoch has no evaluation) are not candidates; a NaN score (e.g. no
    task scorable by average precision) is never the best."""
    if not history:
        return {}
    last = history[-1]
    final: dict[str, Any] = {f"final_{key}": value for key, value in last.items() if key not in NOT_METRICS}
    final["epochs_done"] = int(last["epoch"])
    scored = [row for row in history if score in row]
    if scored:
        sign = 1.0 if Metric(score).higher_is_better else -1.0
        best = max(scored, key=lambda row: -math.inf if math.isnan(row[score]) else sign * row[score])
        final["best_epoch"] = int(best["epoch"])
        final.update({f"best_{key}": best[key] for key in best if key.startswith(("val_", "test_"))})
    return final
