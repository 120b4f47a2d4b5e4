"""One complete SAM update on a mini-batch: whole-batch or m-sharpness, in one piece or accumulated from
micro-batches, in full or mixed precision, in one process or several."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.amp import GradScaler

from samscale.optim.bn import MergedBatchStats, frozen_bn_stats, tracking_batch_norms
from samscale.optim.sam import SAM
from samscale.optim.sync import GradientSync

LossFn = Callable[[Tensor, Tensor], Tensor]
Piece = tuple[Tensor, Tensor]


def sam_update(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor | Sequence[Piece],
    targets: Tensor | None,
    optimizer: SAM,
    m: int | None = None,
    *,
    micro_batch: int | None = None,
    scaler: GradScaler | None = None,
    sync: GradientSync | None = None,
    share: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Clean pass, ascent, perturbed pass, exact restore and base step; returns the clean mean loss and outputs.

    ``loss_fn(outputs, targets)`` must return the mean loss over its examples. The batch is ``inputs, targets``, or
    ``inputs`` alone as a sequence of ``(x, y)`` micro-batches (then ``targets=None``; sizes may differ, each is
    weighted by its number of examples). Afterwards ``.grad`` holds the SAM gradient.

    * ``m=None``: one ε from the whole batch's gradient (the paper on one device). ``m``: consecutive chunks of m
      examples (the last may be shorter), each with its own ε from its own clean gradient, the chunks' SAM
      gradients averaged by size (m-sharpness); with ρ = 0 either is exactly the mean-loss gradient step.
    * ``micro_batch=n``: gradient accumulation. The same update computed n examples at a time: the clean gradients
      of the pieces are accumulated, ε comes from their sum (the whole batch's, or the chunk's under ``m``), then
      the perturbed gradients are accumulated. Only memory changes, except that BatchNorm normalizes each piece
      with the piece's statistics, as it would on separate devices.
    * ``scaler``: a ``torch.amp.GradScaler`` (mixed precision). Both backward passes are scaled; ε comes from the
      unscaled clean gradient; an inf or NaN in either pass skips the whole update (weights, BatchNorm statistics
      and base optimizer state as before the call, ``.grad`` cleared) and the scaler is updated once.
    * ``sync``: a ``GradientSync`` when this process holds its slice of a batch split over several processes;
      ``sync.mode`` picks global SAM (clean gradients averaged before the ascent) or per-device SAM.
      ``share`` is this process's fraction of the batch's examples when the caller knows it (it saves one
      all-reduce and one device-to-host read per step); by default it is measured with ``sync.share``.

    BatchNorm: perturbed passes never touch running statistics. When the clean gradient takes several pieces
    (chunks, micro-batches, processes) each piece normalizes with its own batch statistics and the running
    statistics get ONE update with the size-weighted mean of the pieces' statistics, as with per-device BatchNorm
    and synced statistics. A trailing chunk or micro-batch of a single example is merged into the one before when
    the model has train-mode BatchNorm layers (a single example has no batch variance).
    """
    if not isinstance(optimizer, SAM):
        raise ValueError(f"sam_update needs a samscale SAM optimizer, got {type(optimizer).__name__}")
    if sync is not None and sync.mode == "global" and m is not None:
        raise ValueError(
            f"m-sharpness (m={m}) with global SAM across processes is not supported: use sam_mode='per_device' "
            "(one ε per process, and per chunk of m within each process) or m=None"
        )
    has_bn = bool(tracking_batch_norms(model))
    pieces = _pieces(inputs, targets, _positive("micro_batch", micro_batch), merge_single=has_bn)
    n = sum(len(x) for x, _ in pieces)
    groups = _perturbation_groups(pieces, _positive("m", m), merge_single=has_bn)
    amp = scaler is not None and scaler.is_enabled()
    device = pieces[0][0].device
    if share is None:
        share = sync.share(n, device) if sync is not None else 1.0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    merge = sum(len(group) for group in groups) > 1  # several clean passes: one merged BatchNorm update
    bn = MergedBatchStats(model) if has_bn and (merge or amp) else None
    summed: list[Tensor | None] | None = [None] * len(params) if len(groups) > 1 else None
    losses, outputs = [], []
    overflow = False
    optimizer.zero_grad(set_to_none=True)
    for group in groups:
        n_group = sum(len(x) for x, _ in group)
        for x, y in group:
            piece_stats = bn.piece(len(x) / n) if bn is not None and merge else contextlib.nullcontext()
            with piece_stats:
                loss, output = _clean_pass(model, loss_fn, x, y, len(x) / n_group, scaler, backward=not overflow)
            losses.append(loss * (len(x) / n))
            outputs.append(output)
        if overflow:
            continue  # an earlier chunk overflowed: the update is skipped, only the outputs are still wanted
        if sync is not None and sync.mode == "global":
            sync.average_grads_(params, share)
        if not optimizer.first_step(zero_grad=True, scaler=scaler):
            overflow = True
            continue
        try:
            for x, y in group:
                _perturbed_pass(model, loss_fn, x, y, len(x) / n, scaler)
        finally:
            optimizer.restore()  # also when the perturbed pass fails: never leave the model at w + ε
        if summed is not None:
            _accumulate_and_clear(params, summed)
    if summed is not None and not overflow:
        for p, grad in zip(params, summed):
            p.grad = grad
    if sync is not None and amp:
        overflow = sync.any(overflow, device)
    if not overflow:
        if sync is not None:
            sync.average_grads_(params, share)
        overflow = not optimizer.base_step(scaler)  # False only when the scaler found an inf or NaN
        if overflow:
            optimizer.zero_grad(set_to_none=True)
    else:
        optimizer.skip_update(scaler)
    if overflow and bn is not None:
        bn.revert()
    elif bn is not None and merge:
        bn.finish()
    if sync is not None and not overflow:
        sync.average_bn_stats_(model, share)
    return torch.stack(losses).sum(), torch.cat(outputs)


def _clean_pass(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, weight: float, scaler: GradScaler | None,
    backward: bool = True,
) -> tuple[Tensor, Tensor]:
    """Forward/backward of ``weight`` × loss at the current weights (BatchNorm statistics update here); returns the
    detached unweighted loss and outputs."""
    with torch.enable_grad() if backward else torch.no_grad():
        outputs = model(x)
        loss = _scalar(loss_fn(outputs, y))
        if backward:
            _backward(loss, weight, scaler)
    return loss.detach(), outputs.detach()


def _perturbed_pass(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, weight: float,
                    scaler: GradScaler | None) -> None:
    """Forward/backward of ``weight`` × loss at the perturbed weights, BatchNorm running statistics frozen."""
    with torch.enable_grad(), frozen_bn_stats(model):
        _backward(_scalar(loss_fn(model(x), y)), weight, scaler)


def _backward(loss: Tensor, weight: float, scaler: GradScaler | None) -> None:
    loss = loss if weight == 1.0 else loss * weight
    (scaler.scale(loss) if scaler is not None else loss).backward()


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


def _pieces(inputs: Tensor | Sequence[Piece], targets: Tensor | None, micro_batch: int | None,
            merge_single: bool) -> list[Piece]:
    """The batch as the list of pieces that each get one forward/backward."""
    if isinstance(inputs, Tensor):
        if targets is None:
            raise ValueError("targets is None: pass targets, or pass inputs as a sequence of (x, y) micro-batches")
        _check_pair(inputs, targets)
        size = len(inputs) if micro_batch is None else min(micro_batch, len(inputs))
        return _merge_single_tail(list(zip(inputs.split(size), targets.split(size))), merge_single)
    if targets is not None:
        raise ValueError("inputs is a sequence of (x, y) micro-batches, so targets must be None")
    if micro_batch is not None:
        raise ValueError("micro_batch splits a batch given as tensors; a sequence of micro-batches is already split")
    pieces = [tuple(piece) for piece in inputs]
    if not pieces or any(len(piece) != 2 for piece in pieces):
        raise ValueError("inputs must be a non-empty sequence of (x, y) micro-batches")
    for x, y in pieces:
        _check_pair(x, y)
    return pieces  # type: ignore[return-value]


def _perturbation_groups(pieces: list[Piece], m: int | None, merge_single: bool) -> list[list[Piece]]:
    """Pieces grouped by perturbation: one group (m=None) or one per chunk of m consecutive examples, pieces split at
    chunk boundaries."""
    if m is None:
        return [pieces]
    groups: list[list[Piece]] = []
    filled = m  # examples in the current group; m means "start a new group"
    for x, y in pieces:
        start = 0
        while start < len(x):
            if filled == m:
                groups.append([])
                filled = 0
            take = min(m - filled, len(x) - start)
            groups[-1].append((x[start : start + take], y[start : start + take]))
            filled += take
            start += take
    if merge_single and len(groups) > 1 and sum(len(x) for x, _ in groups[-1]) == 1:
        groups[-2].extend(groups.pop())
        groups[-1] = _merge_single_tail(groups[-1], True)
    return groups


def _merge_single_tail(pieces: list[Piece], merge: bool) -> list[Piece]:
    """Join a trailing one-example piece to the one before (BatchNorm cannot normalize a single example)."""
    if merge and len(pieces) > 1 and len(pieces[-1][0]) == 1:
        (x1, y1), (x2, y2) = pieces[-2], pieces.pop()
        pieces[-1] = (torch.cat([x1, x2]), torch.cat([y1, y2]))
    return pieces


def _scalar(loss: Tensor) -> Tensor:
    if loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar mean loss, got a tensor of shape {tuple(loss.shape)}")
    return loss


def _check_pair(inputs: Tensor, targets: Tensor) -> None:
    n = len(inputs)
    if n == 0 or len(targets) != n:
        raise ValueError(
            f"inputs and targets must hold the same positive number of examples, got {n} and {len(targets)}"
        )


def _positive(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "examples per SAM perturbation" if name == "m" else "examples per accumulated piece"
        raise ValueError(f"{name} ({what}) must be a positive integer or None, got {value!r}")
    return value
