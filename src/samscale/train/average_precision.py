"""Average precision (AP) of multi-task binary predictions, defined as OGB's `Evaluator('ogbg-molpcba')` defines it.

For one task, over its labelled examples: rank the scores, take each distinct score as a threshold from the highest
down, and let P_n and R_n be the precision and recall of calling "positive" every example scored at or above the
n-th threshold. Then AP = Σ_n (R_n − R_{n−1}) P_n with R_0 = 0. Examples with equal scores cross a threshold
together, so ties count neither optimistically nor pessimistically; this is scikit-learn's
`average_precision_score`, which OGB's evaluator calls (it is not the interpolated 11-point AP of PASCAL VOC).

Over tasks (OGB's `_eval_ap`): targets are 0/1 with NaN for a missing label; a task counts only if the split has at
least one labelled positive and one labelled negative for it; the result is the plain mean over the counted tasks.
Where no task counts, OGB raises; here the result is NaN, so a small validation split cannot crash a run.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def binary_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one task: `scores` (higher means more likely positive) against 0/1 `labels`; NaN without positives."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(labels.tolist()) - {0.0, 1.0})[:5]}")
    if not labels.any():
        return math.nan
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # the last position of each run of equal scores: where a threshold has admitted all of its examples
    ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(labels)[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def mean_average_precision(scores: Tensor | np.ndarray, targets: Tensor | np.ndarray) -> float:
    """OGB's AP of (N, T) scores (e.g. logits) against (N, T) 0/1 targets with NaN for missing labels: the mean over
    tasks with a labelled positive and a labelled negative of each task's AP over its labelled examples."""
    if isinstance(scores, Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    if isinstance(targets, Tensor):
        targets = targets.detach().to("cpu", torch.float64).numpy()
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (examples, tasks)")
    per_task = []
    for task in range(targets.shape[1]):
        labelled = ~np.isnan(targets[:, task])
        labels = targets[labelled, task]
        if (labels == 1).any() and (labels == 0).any():
            per_task.append(binary_average_precision(scores[labelled, task], labels))
    return float(np.mean(per_task)) if per_task else math.nan
