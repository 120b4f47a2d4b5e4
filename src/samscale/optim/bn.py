"""BatchNorm running statistics under SAM: kept out of the perturbed pass, and updated once per step when the clean
gradient is computed in pieces."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Inside, forward passes leave every BatchNorm's running_mean, running_var and num_batches_tracked untouched.

    Layers in train mode still normalize with the batch's own statistics (as the authors' perturbed pass does) and
    layers in eval mode with their running statistics. It switches ``track_running_stats`` off for the duration, which
    torch's batch norms (BatchNorm1d/2d/3d, SyncBatchNorm, the lazy variants) honour exactly for any momentum,
    including ``momentum=None`` (cumulative average): no buffer is written and no batch is counted. Setting
    momentum to 0 instead would still count batches and break the cumulative average.
    """
    layers = freeze_bn_stats(model)
    try:
        yield
    finally:
        release_bn_stats(layers)


def freeze_bn_stats(model: nn.Module) -> list[_BatchNorm]:
    """``frozen_bn_stats`` without the block: freeze now, and return the layers to pass to ``release_bn_stats``.

    For code that cannot wrap the perturbed pass in a ``with`` (``SAM(..., model=...)`` freezes in ``first_step``
    and releases when it restores the weights). Layers already frozen are not returned, so nesting is harmless.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for layer in layers:
        layer.track_running_stats = False
    return layers


def release_bn_stats(layers: list[_BatchNorm]) -> None:
    """Let the layers that ``freeze_bn_stats`` froze track their running statistics again."""
    for layer in layers:
        layer.track_running_stats = True


def tracking_batch_norms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers whose running statistics a train-mode forward pass updates."""
    return [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats and m.running_mean is not None
    ]


class MergedBatchStats:
    """Several train-mode passes, ONE running-statistics update with the weighted mean of their batch statistics.

    When a step's clean gradient is computed in pieces (m-sharpness chunks, accumulated micro-batches, or one piece
    per process), each piece normalizes with its own batch statistics, but the running statistics should move once
    per step, as per-device BatchNorm with synced statistics does in data-parallel training (the authors' setup):
    ``running ← (1 − f) · running + f · Σ_k w_k · stat_k`` with f the layer's momentum (or 1/(batches + 1) for
    ``momentum=None``), stat_k the piece's mean and unbiased variance and w_k its share of the examples; the batch
    count grows by one. Letting torch update once per piece would instead apply an effective momentum 1 − (1 − f)^k.

    Use ``with merged.piece(w): model(x)`` around each clean pass, then ``merged.finish()``. Inside a piece the layer's
    momentum is set to 1, so torch writes the piece's own statistics into the buffers, which are read back.
    """

    def __init__(self, model: nn.Module):
        self.layers = tracking_batch_norms(model)
        self.saved = [
            (layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone())
            for layer in self.layers
        ]
        self.sums: list[tuple[Tensor, Tensor] | None] = [None] * len(self.layers)

    @contextmanager
    def piece(self, weight: float) -> Iterator[None]:
        """One clean pass whose batch statistics enter the update with ``weight``."""
        momenta = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.momentum = 1.0
        try:
            yield
        finally:
            for layer, momentum in zip(self.layers, momenta):
                layer.momentum = momentum
        for i, layer in enumerate(self.layers):
            mean, var = layer.running_mean * weight, layer.running_var * weight
            total = self.sums[i]
            self.sums[i] = (mean, var) if total is None else (total[0] + mean, total[1] + var)

    @torch.no_grad()
    def finish(self) -> None:
        """Write the single update (layers that saw no piece keep their saved statistics)."""
        for layer, (mean0, var0, count0), total in zip(self.layers, self.saved, self.sums):
            layer.num_batches_tracked.copy_(count0)
            if total is None:
                layer.running_mean.copy_(mean0)
                layer.running_var.copy_(var0)
                continue
            factor = 1.0 / float(count0 + 1) if layer.momentum is None else layer.momentum
            layer.running_mean.copy_(mean0 * (1 - factor) + total[0] * factor)
            layer.running_var.copy_(var0 * (1 - factor) + total[1] * factor)
            layer.num_batches_tracked.add_(1)

    @torch.no_grad()
    def revert(self) -> None:
        """Put back the statistics saved at construction (for an update that is skipped)."""
        for layer, (mean0, var0, count0) in zip(self.layers, self.saved):
            layer.running_mean.copy_(mean0)
            layer.running_var.copy_(var0)
            layer.num_batches_tracked.copy_(count0)
