"""Keep BatchNorm running statistics out of SAM's perturbed pass, which must still normalize with batch statistics."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
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
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True
