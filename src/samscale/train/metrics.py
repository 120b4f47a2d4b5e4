"""Loss, accuracy and average precision: running means over an epoch's clean passes, and full evaluations of a split.

Means are weighted by examples, except for per-token tagging, where every real token counts once and padding
positions (target `IGNORE_LABEL`) not at all: a batch's loss is then its mean over real tokens (see
`samscale.train.loop.loss_function`), weighted by its number of real tokens, so the epoch mean is the mean over all
real tokens of the epoch, whatever the sentence lengths. Multilabel losses are weighted the same way by labelled
entries (NaN targets are missing labels). Multilabel tasks are scored by OGB's average precision
(`samscale.train.average_precision`), which ranks a whole split's scores and is no running mean: `evaluate` collects
every output of the split for it, and training epochs report the loss only (`train_ap` is never an epoch metric;
`final_train_ap` is measured at the end, like the final training loss).
"""
from __future__ import annotations

from typing import Callable, Iterable, get_args

import torch
from torch import Tensor, nn

from samscale.data.dataset import ACCURACY_TASKS, Task
from samscale.data.text import IGNORE_LABEL
from samscale.train.average_precision import mean_average_precision

TASKS: tuple[str, ...] = get_args(Task)


class EpochMeter:
    """Running mean of loss (and accuracy for classification and tagging) over one epoch, weighted by examples, by
    real tokens for tagging, or by labelled entries for multilabel (which gets no accuracy: see the module)."""

    def __init__(self, task: str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
        self.task = task
        self.scores_accuracy = task in ACCURACY_TASKS
        self.loss_sum: Tensor | float = 0.0
        self.correct: Tensor | int = 0
        self.count: Tensor | int = 0

    def update(self, loss: Tensor, output: Tensor, target: Tensor) -> None:
        """Add one batch whose mean loss is `loss` (kept as device tensors: no host sync per step)."""
        if self.task == "tagging":
            real = target != IGNORE_LABEL
            n: Tensor | int = real.sum()
            hits = ((output.argmax(dim=-1) == target) & real).sum()
        elif self.task == "multilabel":
            n, hits = (~torch.isnan(target)).sum(), 0
        else:
            n = target.shape[0]
            hits = (output.argmax(dim=-1) == target).sum() if self.scores_accuracy else 0
        self.loss_sum = self.loss_sum + loss.detach().double() * n
        self.correct = self.correct + hits
        self.count = self.count + n

    def result(self, prefix: str = "") -> dict[str, float]:
        """Mean loss (and accuracy) over everything seen, keyed with `prefix`."""
        count = max(int(self.count), 1)
        metrics = {f"{prefix}loss": float(self.loss_sum) / count}
        if self.scores_accuracy:
            metrics[f"{prefix}acc"] = int(self.correct) / count
        return metrics


def infer_task(output: Tensor, target: Tensor) -> str:
    """The task a batch's shapes imply: float targets are regression; int64 targets of shape (N,) with outputs
    (N, C) classification, of shape (N, L) with outputs (N, L, C) tagging; anything else is an error."""
    if target.is_floating_point():
        return "regression"
    if target.dtype == torch.int64 and output.dim() == target.dim() + 1 and output.shape[:-1] == target.shape:
        if target.dim() == 1:
            return "classification"
        if target.dim() == 2:
            return "tagging"
    raise ValueError(f"cannot tell the task of outputs {tuple(output.shape)} and {target.dtype} targets "
                     f"{tuple(target.shape)}; pass task= (one of {', '.join(TASKS)})")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    device: torch.device | str = "cpu",
    prefix: str = "",
    task: str | None = None,
) -> dict[str, float]:
    """Mean loss (and accuracy, or for multilabel average precision) of `model` in eval mode over all batches;
    restores the model's mode.

    `task` (see `samscale.data.dataset.Task`) says how to weigh and score; when None it is read from the first
    batch's output and target shapes (`infer_task`, which cannot tell multilabel from regression: pass it).
    For multilabel, every output and target of the split is kept to rank them for average precision (`ap`).
    """
    was_training = model.training
    model.eval()
    meter: EpochMeter | None = None
    kept: list[tuple[Tensor, Tensor]] = []
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            output = model(x)
            meter = meter or EpochMeter(task if task is not None else infer_task(output, y))
            meter.update(loss_fn(output, y), output, y)
            if meter.task == "multilabel":
                kept.append((output.float(), y))
    finally:
        model.train(was_training)
    if meter is None:
        return {}
    metrics = meter.result(prefix)
    if meter.task == "multilabel":
        scores, targets = (torch.cat(parts) for parts in zip(*kept))
        metrics[f"{prefix}ap"] = mean_average_precision(scores, targets)
    return metrics
