"""Symmetric linear operators on flat parameter vectors: the abstraction the eigen-algorithms work against."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from samscale.hessian.objective import HVP_MODES, Batch, LossFn, Objective, check_choice


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


class HessianOperator(LinearOperator):
    """The Hessian of the mean loss over fixed batches, H = ∇²f(w), applied by Hessian-vector products.

    Batches (an iterable of (x, y), materialized once) are weighted by size; `loss_fn` must return the batch mean.
    HVPs are summed batch by batch without per-example Hessians, by forward-over-reverse differentiation
    (`hvp_mode="fwd_rev"`, torch.func.jvp of torch.func.grad), reverse-over-forward (`"rev_fwd"`) or double backward
    (`"double_backward"`); all three give the same product.
    `bn_mode="eval"` uses BatchNorm running statistics; `"train"` uses batch statistics without updating them.
    `cache=True` (double backward only) builds every batch's gradient graph once, on the first product, and keeps it
    in memory, so each product is one backward pass: worth it for many products on a small analysis set.
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
        hvp_mode: str = "fwd_rev",
        cache: bool = False,
    ) -> None:
        check_choice("hvp_mode", hvp_mode, HVP_MODES)
        if cache and hvp_mode != "double_backward":
            raise ValueError(
                f"cache=True needs hvp_mode='double_backward' (the only mode that reuses a gradient graph), "
                f"got {hvp_mode!r}"
            )
        self.objective = Objective(model, loss_fn, batches, bn_mode=bn_mode, dtype=dtype, params=params)
        self.hvp_mode = hvp_mode
        self.cache = cache
        self._cached: Callable[[Tensor], Tensor] | None = None
        self.size = self.objective.size
        self.dtype = self.objective.dtype
        self.device = self.objective.device

    def matvec(self, vector: Tensor) -> Tensor:
        if not self.cache:
            return self.objective.hvp(vector, mode=self.hvp_mode)
        if self._cached is None:
            self._cached = self.objective.cached_hvp()
        return self._cached(vector)

    def loss(self) -> float:
        """The mean loss f(w) at the operator's parameters."""
        return float(self.objective.value())

    def gradient(self) -> Tensor:
        """The flat gradient ∇f(w) at the operator's parameters."""
        return self.objective.gradient()
