"""Curvature of a trained run's minimum: which examples the Hessian is taken over, and the run's analyses.

The Hessian is that of the mean training loss over a fixed, un-augmented subset of the training split (its first
`n_examples` examples), with BatchNorm in eval mode, so the numbers describe the minimum the run ended in. The
measurements themselves are `samscale.hessian.analyze`; this module only chooses the data and the settings.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from samscale.data import Dataset, ImageFolderSplit
from samscale.hessian import analyze
from samscale.spec.run import RunSpec
from samscale.train.precision import precision_policy


def curvature_batches(dataset: Dataset, n_examples: int, batch_size: int = 512) -> list[tuple[Tensor, Tensor]]:
    """The first `n_examples` training examples (no augmentation), in batches; image folders are decoded here."""
    train = dataset.train
    n = min(n_examples, len(train))
    if isinstance(train, ImageFolderSplit):
        split = train.subset(torch.arange(n)).as_eval()
        x = torch.stack([split.load(i) for i in range(n)])
        y = split.y
    else:
        x, y = train.x[:n], train.y[:n]
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def analyze_model(
    spec: RunSpec, model: nn.Module, dataset: Dataset, loss_fn, what: Sequence[str] | None = None,
    n_examples: int | None = None, device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Run the spec's (or the given) analyses on a trained model; returns the full JSON-serializable report.

    The analysis runs on `device` (default: where the model's parameters are, i.e. where it trained) in fp32 under
    `runtime.analysis_precision` (TF32 off by default), on a copy of the model: the caller's model keeps its
    weights, mode and device.
    """
    batches = curvature_batches(dataset, n_examples or spec.analysis.n_examples)
    if device is None:
        device = next(model.parameters()).device
    copy = deepcopy(model).to(device=device, dtype=torch.float32).eval()
    with precision_policy(spec.runtime.analysis_precision):
        return analyze(copy, loss_fn, batches, what=list(what or spec.analysis.what), top_k=spec.analysis.top_k,
                       seed=spec.train.seed)
