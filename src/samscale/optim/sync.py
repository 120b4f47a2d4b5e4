"""Data-parallel SAM without DDP: explicit, example-weighted averages over the processes of a torch.distributed group.

SAM needs to decide when gradients are averaged: global SAM averages the clean gradient before the ascent norm,
per-device SAM only the final SAM gradient. DDP averages inside every backward, so it is not used; instead
``GradientSync`` all-reduces one flat buffer at the points ``sam_update`` (or a plain training loop) chooses. Every
average is weighted by each process's number of examples, so unequal slices of a batch give the whole-batch mean.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from samscale.optim.bn import tracking_batch_norms

SamMode = Literal["global", "per_device"]
SAM_MODES: tuple[str, ...] = ("global", "per_device")


class GradientSync:
    """Example-weighted averaging of gradients, BatchNorm statistics and metrics across a process group.

    ``mode`` is the SAM semantics across processes: ``"global"`` (clean gradients averaged before the ascent, so ε
    comes from the whole batch's gradient: single-process SAM on the global batch) or ``"per_device"`` (each process
    perturbs with its own gradient: m-sharpness with m = the per-process batch). Build it after
    ``torch.distributed.init_process_group``; ``from_environment`` returns None when there is nothing to sync.
    """

    def __init__(self, mode: SamMode = "global", group: dist.ProcessGroup | None = None):
        if mode not in SAM_MODES:
            raise ValueError(f"sam_mode must be one of {list(SAM_MODES)}, got {mode!r}")
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("GradientSync needs torch.distributed.init_process_group() to have been called")
        self.mode = mode
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    @classmethod
    def from_environment(cls, mode: SamMode = "global") -> "GradientSync | None":
        """A sync over the default group when this process is one of several, else None."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(mode)
        return None

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the only process that writes checkpoints and reports)."""
        return self.rank == 0

    def share(self, local_examples: int, device: torch.device | str = "cpu") -> float:
        """This process's fraction of the examples of the current step, summed over the group (one all-reduce)."""
        total = torch.tensor([float(local_examples)], dtype=torch.float64, device=device)
        dist.all_reduce(total, group=self.group)
        examples = total.item()  # one device-to-host read
        if examples <= 0:
            raise ValueError("no process of the group holds an example of this step")
        return local_examples / examples

    @torch.no_grad()
    def average_(self, tensors: list[Tensor], share: float) -> None:
        """tensors ← Σ_processes share_p · tensors_p, in place, through one flat all-reduce per dtype."""
        by_dtype: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault((t.dtype, t.device), []).append(t)
        for group in by_dtype.values():
            flat = _flatten_dense_tensors(group)
            flat.mul_(share)
            dist.all_reduce(flat, group=self.group)
            torch._foreach_copy_(group, list(_unflatten_dense_tensors(flat, group)))

    def average_grads_(self, params: list[Tensor], share: float) -> None:
        """Replace each ``.grad`` by the example-weighted mean over the group (a missing one counts as zero)."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.average_([p.grad for p in params], share)

    def average_bn_stats_(self, model: nn.Module, share: float) -> None:
        """Average the running statistics of the model's train-mode BatchNorms (each process normalized alone)."""
        layers = tracking_batch_norms(model)
        self.average_([t for layer in layers for t in (layer.running_mean, layer.running_var)], share)

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """Whether ``flag`` is true on any process of the group."""
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.group)
        return bool(value.item())

    def assemble(self, rows: Tensor, offset: int, total: int) -> Tensor:
        """The group's rows in order: each process's ``rows`` placed at its ``offset`` of ``total`` (exact)."""
        low = rows.dtype in (torch.float16, torch.bfloat16)  # not every backend reduces half floats
        full = rows.new_zeros((total, *rows.shape[1:]), dtype=torch.float32 if low else rows.dtype)
        full[offset : offset + len(rows)] = rows
        dist.all_reduce(full, group=self.group)
        return full


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """The examples of a batch of n that process ``rank`` takes: consecutive slices of ⌈n / world_size⌉."""
    size = -(-n // world_size)
    return slice(min(rank * size, n), min((rank + 1) * size, n))
