"""One complete SAM update on a mini-batch, whole-batch or m-sharpness (perturbation per chunk of m examples)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from samscale.optim.bn import frozen_bn_stats
from samscale.optim.sam import SAM

LossFn = Callable[[Tensor, Tensor], Tensor]


def sam_update(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    optimizer: SAM,
    m: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Clean pass, ascent, perturbed pass, exact restore and base step; returns the clean mean loss and outputs.

    ``loss_fn(outputs, targets)`` must return the mean loss over its examples. With ``m=None`` the whole batch is
    one chunk (the paper on one device). With ``m`` the batch is split into consecutive chunks of m examples (the
    last may be shorter); each chunk gets its own ε from its own clean gradient, and the chunk SAM gradients are
    averaged weighted by chunk size, so with ρ = 0 the update is exactly the mean-loss gradient step. Perturbed
    passes never touch BatchNorm running statistics; clean passes update them once per chunk, as per-device
    BatchNorm does in data-parallel training. Afterwards ``.grad`` holds the averaged SAM gradient.
    """
    n = _batch_size(inputs, targets)
    size = _chunk_size(m, n)
    chunks = list(zip(inputs.split(size), targets.split(size)))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    summed: list[Tensor | None] = [None] * len(params)
    losses, outputs = [], []
    optimizer.zero_grad(set_to_none=True)
    for x, y in chunks:
        weight = len(x) / n
        loss, output = _clean_pass(model, loss_fn, x, y)
        losses.append(loss * weight)
        outputs.append(output)
        optimizer.first_step(zero_grad=True)
        try:
            _perturbed_pass(model, loss_fn, x, y, weight)
        finally:
            optimizer.restore()  # also when the perturbed pass fails: never leave the model at w + ε
        if len(chunks) > 1:
            _accumulate_and_clear(params, summed)
    if len(chunks) > 1:
        for p, grad in zip(params, summed):
            p.grad = grad
    optimizer.base_step()
    return torch.stack(losses).sum(), torch.cat(outputs)


def _clean_pass(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Forward/backward at the current weights (BatchNorm statistics update here); returns detached loss, outputs."""
    with torch.enable_grad():
        outputs = model(x)
        loss = _scalar(loss_fn(outputs, y))
        loss.backward()
    return loss.detach(), outputs.detach()


def _perturbed_pass(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, weight: float) -> None:
    """Forward/backward of ``weight`` × loss at the perturbed weights, BatchNorm running statistics frozen."""
    with torch.enable_grad(), frozen_bn_stats(model):
        loss = _scalar(loss_fn(model(x), y))
        (loss if weight == 1.0 else loss * weight).backward()


@torch.no_grad()
def _accumulate_and_clear(params: list[Tensor], summed: list[Tensor | None]) -> None:
    """Move each parameter's gradient into the running sum (the first gradient tensor itself becomes the sum)."""
    targets, additions = [], []
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        if summed[i] is None:
            summed[i] = p.grad
        else:
            targets.append(summed[i])
            additions.append(p.grad)
        p.grad = None
    if targets:
        torch._foreach_add_(targets, additions)


def _scalar(loss: Tensor) -> Tensor:
    if loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar mean loss, got a tensor of shape {tuple(loss.shape)}")
    return loss


def _batch_size(inputs: Tensor, targets: Tensor) -> int:
    n = len(inputs)
    if n == 0 or len(targets) != n:
        raise ValueError(
            f"inputs and targets must hold the same positive number of examples, got {n} and {len(targets)}"
        )
    return n


def _chunk_size(m: int | None, n: int) -> int:
    """Examples per perturbation chunk: the whole batch for m=None, else m (capped at the batch size)."""
    if m is None:
        return n
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m (examples per SAM perturbation) must be a positive integer or None, got {m!r}")
    return min(m, n)
