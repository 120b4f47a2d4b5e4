"""Pruning at initialization (docs/PROTOCOL.md §5, sparsity experiment): masks, their application, and their enforcement.

Prunable weights are the kernels of every Linear and convolution layer (the classifier included). Biases,
normalization scales/shifts, class tokens and position embeddings are never pruned: they are few and pruning them
changes what a layer can represent rather than how many connections it has.

- "random": layer-wise uniform — every layer keeps exactly round((1 − s) · n) of its n weights, chosen uniformly.
- "snip" (Lee et al. 2019): global — keep the round((1 − s) · N) weights with the largest |w · ∂L/∂w| over all N
  prunable weights, the gradient taken on one batch in train mode (BatchNorm running statistics are left untouched).
Sparsity 0 gives all-ones masks (nothing pruned). Masks are boolean tensors keyed by parameter name.

Keeping pruned weights at exactly zero under momentum, weight decay and SAM's perturbation: `MaskEnforcer` zeroes
their gradients (so the SAM ascent direction, its norm and the momentum buffer never involve them, and coupled weight
decay adds λ·0) and re-applies the masks after every optimizer step as a guard against anything else that writes
weights.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

METHODS = ("random", "snip")
"""Pruning-at-initialization methods `make_masks` knows."""

Masks = dict[str, Tensor]


class UnknownParameterError(KeyError):
    """A mask names a parameter the model does not have; the message lists the prunable ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights pruning may zero: kernels of Linear and convolution layers, keyed as in `named_parameters`."""
    found: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            found[f"{name}.weight" if name else "weight"] = module.weight
    return found


def _check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _kept(sparsity: float, total: int) -> int:
    return round((1.0 - sparsity) * total)


def _random_masks(weights: Mapping[str, Tensor], sparsity: float, generator: torch.Generator | None) -> Masks:
    masks = {}
    for name, weight in weights.items():
        order = torch.randperm(weight.numel(), generator=generator)
        mask = torch.zeros(weight.numel(), dtype=torch.bool)
        mask[order[: _kept(sparsity, weight.numel())]] = True
        masks[name] = mask.view(weight.shape).to(weight.device)
    return masks


def snip_scores(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """SNIP connection sensitivity |w · ∂L/∂w| of every prunable weight on one batch (train mode, buffers restored)."""
    inputs, targets = batch
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    weights = prunable_parameters(model)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        grads = torch.autograd.grad(loss_fn(model(inputs), targets), list(weights.values()), allow_unused=True)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
    return {
        name: (w.detach() * g).abs() if g is not None else torch.zeros_like(w.detach())
        for (name, w), g in zip(weights.items(), grads)
    }


def _snip_masks(scores: Mapping[str, Tensor], sparsity: float) -> Masks:
    flat = torch.cat([s.flatten() for s in scores.values()])
    flags = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    flags[torch.topk(flat, _kept(sparsity, flat.numel()), sorted=False).indices] = True
    masks, start = {}, 0
    for name, score in scores.items():
        masks[name] = flags[start : start + score.numel()].view(score.shape)
        start += score.numel()
    return masks


def make_masks(
    model: nn.Module,
    method: str,
    sparsity: float,
    *,
    generator: torch.Generator | None = None,
    batch: tuple[Tensor, Tensor] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Masks:
    """Boolean keep-masks for the prunable weights of `model` at `sparsity` ∈ [0, 1) by `method` ("random" or "snip").

    "random" draws from `generator` (or the global RNG); "snip" needs `batch` = (inputs, targets) and uses `loss_fn`
    (default cross-entropy).
    """
    sparsity = _check_sparsity(sparsity)
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid: {', '.join(METHODS)}")
    weights = prunable_parameters(model)
    if not weights:
        raise ValueError(f"{type(model).__name__} has no Linear or convolution weights to prune")
    if sparsity == 0.0:
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    if method == "random":
        return _random_masks(weights, sparsity, generator)
    if batch is None:
        raise ValueError("method 'snip' needs batch=(inputs, targets) to score the weights")
    return _snip_masks(snip_scores(model, batch, loss_fn), sparsity)


def _masked_parameters(model: nn.Module, masks: Mapping[str, Tensor]) -> list[tuple[nn.Parameter, Tensor]]:
    params = dict(model.named_parameters())
    pairs = []
    for name, mask in masks.items():
        if name not in params:
            raise UnknownParameterError(
                f"mask for unknown parameter {name!r}; prunable: {', '.join(prunable_parameters(model))}"
            )
        if mask.shape != params[name].shape:
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}, parameter has {tuple(params[name].shape)}")
        pairs.append((params[name], mask.to(device=params[name].device, dtype=torch.bool)))
    return pairs


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Zero, in place, every weight whose mask entry is False."""
    with torch.no_grad():
        for param, mask in _masked_parameters(model, masks):
            param.masked_fill_(~mask, 0.0)


def _mask_gradient(mask: Tensor, grad: Tensor) -> Tensor:
    return grad.masked_fill(~mask, 0.0)


class MaskEnforcer:
    """Keeps pruned weights exactly zero during training: masks their gradients and re-applies the masks after steps.

    Construction zeroes the pruned weights and installs gradient hooks; `attach(optimizer)` adds the post-step
    re-application. Create it after moving the model to its device. Use as a context manager, or call `remove()`,
    to take the hooks off.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor]) -> None:
        self._pairs = _masked_parameters(model, masks)
        self._handles: list[RemovableHandle] = [p.register_hook(partial(_mask_gradient, m)) for p, m in self._pairs]
        self.enforce()

    def enforce(self) -> None:
        """Zero the pruned weights now."""
        with torch.no_grad():
            for param, mask in self._pairs:
                param.masked_fill_(~mask, 0.0)

    def attach(self, optimizer: torch.optim.Optimizer) -> MaskEnforcer:
        """Re-apply the masks after every `optimizer.step()`; returns self. With SAM, pass its base optimizer."""
        if not hasattr(optimizer, "register_step_post_hook"):
            raise TypeError(f"{type(optimizer).__name__} has no register_step_post_hook; pass a torch.optim.Optimizer")
        self._handles.append(optimizer.register_step_post_hook(self._after_step))
        return self

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.enforce()

    def remove(self) -> None:
        """Take off every hook this enforcer installed."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> MaskEnforcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _named(model: nn.Module, masks: Mapping[str, Tensor]) -> list[tuple[str, nn.Parameter]]:
    params = [p for p, _ in _masked_parameters(model, masks)]
    return list(zip(masks, params))


def layer_densities(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, float]:
    """Fraction of non-zero entries of every masked weight tensor, as the model holds it now."""
    return {name: param.count_nonzero().item() / param.numel() for name, param in _named(model, masks)}


def density(model: nn.Module, masks: Mapping[str, Tensor]) -> float:
    """Fraction of non-zero entries over all masked weights together, as the model holds them now."""
    pairs = _named(model, masks)
    return sum(p.count_nonzero().item() for _, p in pairs) / sum(p.numel() for _, p in pairs)
