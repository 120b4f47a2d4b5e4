"""Per-example Hessian moments M_k = (1/n) Σ_i H_i^k and the non-uniformity S_k = M_k − H^k (docs/PROTOCOL.md §6).

M_k·v applies each example's Hessian k times to v (per-example HVPs, vectorized with torch.func.vmap over chunks
of examples), so no per-example Hessian is ever formed. The model is evaluated in eval mode throughout: a BatchNorm
layer in train mode couples the examples of a batch, so per-example Hessians do not exist there.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import vmap

from samscale.hessian.lanczos import lanczos
from samscale.hessian.objective import (
    Batch,
    LossFn,
    Objective,
    as_batches,
    evaluation_mode,
    forward_over_reverse,
    is_zero_tensor_bug,
    reverse_over_forward,
)
from samscale.hessian.operator import HessianOperator, LinearOperator


def _require_eval(bn_mode: str) -> None:
    if bn_mode != "eval":
        raise ValueError(
            f"per-example Hessian moments need bn_mode='eval', got {bn_mode!r}: with batch statistics "
            "(BatchNorm in train mode) the loss of one example depends on the whole batch"
        )


class MomentOperator(LinearOperator):
    """M_k v = (1/n) Σ_i H_i^k v over all examples in `data` (one (x, y) pair or an iterable of them).

    H_i is the Hessian of `loss_fn(model(x_i[None]), y_i[None])`. Examples are processed `chunk_size` at a time
    under vmap, which bounds memory at about chunk_size per-example HVPs.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Batch | Iterable[Batch],
        k: int,
        *,
        bn_mode: str = "eval",
        dtype: torch.dtype | None = None,
        params: Iterable[str | nn.Parameter] | None = None,
        chunk_size: int = 32,
    ) -> None:
        _require_eval(bn_mode)
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"moment order k must be a positive integer, got {k!r}")
        if not (isinstance(chunk_size, int) and chunk_size >= 1):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.objective = Objective(model, loss_fn, as_batches(data), bn_mode="eval", dtype=dtype, params=params)
        self.k = k
        self.chunk_size = chunk_size
        self._hvp = forward_over_reverse
        self.size = self.objective.size
        self.dtype = self.objective.dtype
        self.device = self.objective.device

    def _example_power(self, params: dict[str, Tensor], x: Tensor, y: Tensor, u: dict[str, Tensor]) -> dict:
        def loss(p: dict[str, Tensor]) -> Tensor:
            return self.objective.batch_loss(p, x.unsqueeze(0), y.unsqueeze(0))

        for _ in range(self.k):
            u = self._hvp(loss, params, u)
        return u

    def matvec(self, vector: Tensor) -> Tensor:
        """M_k·v; forward-over-reverse per-example HVPs, or reverse-over-forward where torch cannot do the former."""
        try:
            return self._matvec(vector)
        except RuntimeError as error:
            if self._hvp is reverse_over_forward or not is_zero_tensor_bug(error):
                raise
            self._hvp = reverse_over_forward
            return self._matvec(vector)

    def _matvec(self, vector: Tensor) -> Tensor:
        objective = self.objective
        params = objective.unflatten(objective.point)
        tangent = objective.unflatten(vector)
        batched = vmap(self._example_power, in_dims=(None, 0, 0, None))
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        with evaluation_mode(objective.model, "eval"):
            for x, y in objective.batches:
                for start in range(0, x.shape[0], self.chunk_size):
                    chunk = slice(start, start + self.chunk_size)
                    powers = batched(params, x[chunk], y[chunk], tangent)
                    total += objective.flatten({n: t.sum(0) for n, t in powers.items()})
        return total / objective.n_examples


class NonUniformityOperator(LinearOperator):
    """S_k v = M_k v − H^k v, where H = (1/n) Σ_i H_i is the Hessian of the mean loss over the same examples.

    S_2 = (1/n) Σ_i (H_i − H)² is positive semi-definite; S_3 and S_4 can be indefinite.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Batch | Iterable[Batch],
        k: int,
        *,
        bn_mode: str = "eval",
        dtype: torch.dtype | None = None,
        params: Iterable[str | nn.Parameter] | None = None,
        chunk_size: int = 32,
    ) -> None:
        batches = as_batches(data)
        self.moment = MomentOperator(
            model, loss_fn, batches, k, bn_mode=bn_mode, dtype=dtype, params=params, chunk_size=chunk_size
        )
        self.hessian = HessianOperator(model, loss_fn, batches, bn_mode="eval", dtype=dtype, params=params)
        self.k = k
        self.size = self.moment.size
        self.dtype = self.moment.dtype
        self.device = self.moment.device

    def matvec(self, vector: Tensor) -> Tensor:
        power = vector.to(self.dtype)
        for _ in range(self.k):
            power = self.hessian.matvec(power)
        return self.moment.matvec(vector) - power


class NonUniformity(NamedTuple):
    """s_k = λ_max(S_k)^{1/k} (0.0 when λ_max(S_k) ≤ 0), with λ_max itself and how its Lanczos run ended."""

    value: float
    top_eigenvalue: float
    converged: bool
    n_matvec: int


def nonuniformity_result(
    model: nn.Module,
    loss_fn: LossFn,
    data: Batch | Iterable[Batch],
    k: int,
    *,
    dtype: torch.dtype | None = None,
    params: Iterable[str | nn.Parameter] | None = None,
    chunk_size: int = 32,
    tol: float = 1e-6,
    max_iter: int | None = None,
    generator: torch.Generator | None = None,
) -> NonUniformity:
    """The k-th Hessian non-uniformity s_k = λ_max(S_k)^{1/k} with λ_max by Lanczos (largest algebraic), and the
    Lanczos run's convergence. `max_iter` defaults to Lanczos's own default and is capped at the operator size.

    s_k is 0.0 when λ_max(S_k) ≤ 0 (possible for k = 3, 4; for k = 2 only up to rounding): a non-positive λ_max
    satisfies every upper bound s_k ≤ c that the stability theory places on it, so 0 is the consistent value.
    """
    op = NonUniformityOperator(model, loss_fn, data, k, dtype=dtype, params=params, chunk_size=chunk_size)
    steps = None if max_iter is None else max(1, min(max_iter, op.size))
    result = lanczos(op, k=1, tol=tol, max_iter=steps, which="LA", generator=generator)
    top = float(result.eigenvalues[0])
    return NonUniformity(math.pow(top, 1.0 / k) if top > 0 else 0.0, top, bool(result.converged), result.n_matvec)


def nonuniformity(
    model: nn.Module,
    loss_fn: LossFn,
    data: Batch | Iterable[Batch],
    k: int,
    *,
    dtype: torch.dtype | None = None,
    params: Iterable[str | nn.Parameter] | None = None,
    chunk_size: int = 32,
    tol: float = 1e-6,
    max_iter: int | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """s_k = λ_max(S_k)^{1/k}, the k-th Hessian non-uniformity (the value of `nonuniformity_result`)."""
    return nonuniformity_result(
        model, loss_fn, data, k, dtype=dtype, params=params, chunk_size=chunk_size, tol=tol, max_iter=max_iter,
        generator=generator,
    ).value
