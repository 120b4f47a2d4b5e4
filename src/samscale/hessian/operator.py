"""Symmetric linear operators on flat parameter vectors: the abstraction the eigen-algorithms work against."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from samscale.hessian.objective import (
    HVP_MODES,
    Batch,
    CachedHvp,
    LossFn,
    Objective,
    check_choice,
    evaluation_mode,
)

OPERATOR_MODES = ("auto", *HVP_MODES)
DEFAULT_CACHE_BYTES = 2 * 2**30  # graphs kept for cached double backward: 2 GiB


class LinearOperator(ABC):
    """A symmetric P×P operator known only through its matrix-vector product."""

    size: int
    dtype: torch.dtype
    device: torch.device

    @abstractmethod
    def matvec(self, vector: Tensor) -> Tensor:
        """A·v for a flat vector v of shape (size,), returned in the operator's dtype."""

    def __matmul__(self, vector: Tensor) -> Tensor:
        return self.matvec(vector)

    def to_dense(self) -> Tensor:
        """The explicit P×P matrix, built from P matvecs (for small operators and checks)."""
        eye = torch.eye(self.size, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(column) for column in eye], dim=1)


class MatrixOperator(LinearOperator):
    """An explicit symmetric matrix viewed as a LinearOperator."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.size = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device

    def matvec(self, vector: Tensor) -> Tensor:
        return self.matrix @ vector.to(self.dtype)


def as_operator(op: LinearOperator | Tensor) -> LinearOperator:
    """Accept either a LinearOperator or an explicit square matrix."""
    if isinstance(op, LinearOperator):
        return op
    if isinstance(op, Tensor):
        return MatrixOperator(op)
    raise ValueError(f"expected a LinearOperator or a square matrix tensor, got {type(op).__name__}")


def apply(op: LinearOperator, vector: Tensor) -> Tensor:
    """op·v computed in the operator's dtype and returned in v's dtype (algorithms may work in higher precision)."""
    return op.matvec(vector.to(device=op.device, dtype=op.dtype)).to(vector.dtype)


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class HessianOperator(LinearOperator):
    """The Hessian of the mean loss over fixed batches, H = ∇²f(w), applied by Hessian-vector products.

    Batches (an iterable of (x, y), materialized once) are weighted by size; `loss_fn` must return the batch mean.
    HVPs are summed batch by batch without per-example Hessians. Modes (`hvp_mode`), all giving the same product:
    "double_backward" (∇(gᵀv) through the gradient's graph), "fwd_rev" (forward-over-reverse, torch.func.jvp of
    torch.func.grad), "rev_fwd" (reverse-over-forward), and the default "auto": double backward with the graphs
    cached when they fit in `cache_bytes` (on CPU the fastest per product once cached; benchmarks/bench_hessian.py
    measures it), falling back to another mode where double backward is not exact: an error while
    building or applying the graph switches to forward-over-reverse; through a custom autograd.Function (whose
    backward may be once-differentiable and silently drop terms) the first product is also computed
    reverse-over-forward, once, a disagreement switching to that mode (`fallback_reason` says why). Not checked:
    reverse-over-forward is wrong in torch 2.13 through BatchNorm with batch statistics (bn_mode="train"; refused
    when asked for by name), so a custom Function and bn_mode="train" together should pin a mode after checking it. `mode_used` says what was
    chosen (e.g. "double_backward+cache").
    `cache` (double backward only): True keeps every batch's gradient graph from the first product on, so each
    product is one backward pass; False rebuilds it per product; None (default) caches when the graphs' memory,
    measured on the first batch and scaled by the number of examples, is at most `cache_bytes`. BatchNorm: "eval"
    uses running statistics, "train" batch statistics (not updated).
    The parameters are a snapshot taken at construction; the model is never modified.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Batch | Iterable[Batch],
        *,
        bn_mode: str = "eval",
        dtype: torch.dtype | None = None,
        params: Iterable[str | nn.Parameter] | None = None,
        hvp_mode: str = "auto",
        cache: bool | None = None,
        cache_bytes: float = DEFAULT_CACHE_BYTES,
    ) -> None:
        check_choice("hvp_mode", hvp_mode, OPERATOR_MODES)
        if cache and hvp_mode not in ("auto", "double_backward"):
            raise ValueError(
                f"cache=True needs hvp_mode='double_backward' or 'auto' (the modes that reuse a gradient graph), "
                f"got {hvp_mode!r}"
            )
        if hvp_mode == "rev_fwd" and bn_mode == "train" and _has_batch_norm(model):
            raise ValueError(
                "hvp_mode='rev_fwd' gives wrong products through BatchNorm with bn_mode='train' (torch 2.13's "
                "reverse-over-forward through batch statistics); use 'auto', 'double_backward' or 'fwd_rev'"
            )
        if not cache_bytes >= 0:
            raise ValueError(f"cache_bytes must be a non-negative number of bytes, got {cache_bytes!r}")
        self.objective = Objective(model, loss_fn, batches, bn_mode=bn_mode, dtype=dtype, params=params)
        self.hvp_mode = hvp_mode
        self.cache = cache
        self.cache_bytes = cache_bytes
        self.fallback_reason: str | None = None
        self._product: Callable[[Tensor], Tensor] | None = None
        self._label: str | None = None
        self._verify = False
        self.size = self.objective.size
        self.dtype = self.objective.dtype
        self.device = self.objective.device

    @property
    def mode_used(self) -> str:
        """The product actually computed: "double_backward+cache", "double_backward", "fwd_rev" or "rev_fwd"
        (choosing it builds the gradient graphs if the choice has not been made yet)."""
        if self._product is None:
            self._choose()
        if self._label == "fwd_rev" and self.objective._fwd_rev_unsupported:
            return "rev_fwd"
        return self._label

    def _use(self, label: str) -> None:
        self._label = label
        mode = "double_backward" if label.startswith("double_backward") else label
        self._product = lambda vector: self.objective.hvp(vector, mode=mode)

    def _choose(self) -> None:
        if self.hvp_mode in ("fwd_rev", "rev_fwd"):
            self._use(self.hvp_mode)
            return
        limit = math.inf if self.cache else 0.0 if self.cache is False else self.cache_bytes
        try:
            cached = self.objective.cached_hvp(limit) if limit > 0 else None
        except (RuntimeError, NotImplementedError) as error:
            if self.hvp_mode != "auto":
                raise
            self._fall_back(f"building the gradient graph failed: {error}")
            return
        if cached is None:
            self._use("double_backward")
        else:
            self._label, self._product = "double_backward+cache", cached
        self._verify = self.hvp_mode == "auto" and bool(self.objective.custom_functions())

    def _fall_back(self, reason: str, mode: str = "fwd_rev") -> None:
        self.fallback_reason = reason
        self._verify = False
        self._use(mode)

    def matvec(self, vector: Tensor) -> Tensor:
        if self._product is None:
            self._choose()
        if not self._verify:
            return self._product(vector)
        # "auto" through a custom autograd.Function: the first double-backward product is checked against
        # reverse-over-forward, once. A Function whose backward is not itself differentiable (@once_differentiable)
        # makes double backward (and forward-over-reverse, which also differentiates the backward pass) silently
        # drop terms; reverse-over-forward differentiates the forward-mode formulas instead.
        self._verify = False
        try:
            product = self._product(vector)
        except (RuntimeError, NotImplementedError) as error:
            self._fall_back(f"double backward failed: {error}")
            return self._product(vector)
        try:
            reference = self.objective.hvp(vector, mode="rev_fwd")
        except (RuntimeError, NotImplementedError) as error:
            self.fallback_reason = f"not checked: reverse-over-forward failed ({error})"
            return product
        if float((product - reference).norm()) > 1e-4 * float(reference.norm()):
            self._fall_back("double backward disagreed with reverse-over-forward on the first product", "rev_fwd")
            return reference
        return product

    def loss(self) -> float:
        """The mean loss f(w) at the operator's parameters."""
        return float(self.objective.value())

    def gradient(self) -> Tensor:
        """The flat gradient ∇f(w) at the operator's parameters."""
        return self.objective.gradient()
