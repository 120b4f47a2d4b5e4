"""Loss and accuracy: running means over an epoch's clean passes, and full evaluations of a split."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn



class EpochMeter:
    """Example-weighted running mean of loss (and accuracy for classification) over one epoch."""

    def __init__(self, classification: bool):
        self.classification = classification
        self.loss_sum: Tensor | float = 0.0
        self.correct: Tensor | int = 0
        self.count = 0

    def update(self, loss: Tensor, output: Tensor, target: Tensor) -> None:
        """Add one batch (kept as device tensors: no host sync per step)."""
        n = target.shape[0]
        self.loss_sum = self.loss_sum + loss.detach().double() * n
        if self.classification:
            self.correct = self.correct + (output.argmax(dim=-1) == target).sum()
        self.count += n

    def result(self, prefix: str = "") -> dict[str, float]:
        """Mean loss (and accuracy) over everything seen, keyed with `prefix`."""
        metrics = {f"{prefix}loss": float(self.loss_sum) / max(self.count, 1)}
        if self.classification:
            metrics[f"{prefix}acc"] = int(self.correct) / max(self.count, 1)
        return metrics


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    device: torch.device | str = "cpu",
    prefix: str = "",
) -> dict[str, float]:
    """Mean loss (and accuracy) of `model` in eval mode over all batches; restores the model's mode."""
    was_training = model.training
    model.eval()
    meter: EpochMeter | None = None
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            meter = meter or EpochMeter(classification=y.dtype == torch.int64)
            output = model(x)
            meter.update(loss_fn(output, y), output, y)
    finally:
        model.train(was_training)
    return meter.result(prefix) if meter is not None else {}
