"""The curvature of a trained minimum that the linear-stability theory constrains: a = λ_max(H) and s₂, s₃, s₄.

H is the Hessian of the mean training loss over all given examples; s_k = λ_max(S_k)^{1/k} with S_k = M_k − H^k and
M_k = (1/n) Σ_i H_i^k the per-example moments (docs/PROTOCOL.md §6). Everything is evaluated in eval mode by
Hessian-vector products (`samscale.hessian`); no Hessian is formed and the model is not modified.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from samscale.hessian.lanczos import lanczos
from samscale.hessian.moments import nonuniformity_result
from samscale.hessian.objective import Batch, LossFn
from samscale.hessian.operator import HessianOperator

NONUNIFORMITY_ORDERS = (2, 3, 4)


@dataclass(frozen=True)
class MinimumCurvature:
    """Loss and curvature at one minimum, with how well each Lanczos run converged.

    `s` maps k to s_k (0.0 when λ_max(S_k) ≤ 0, which satisfies every upper bound); `s_converged` likewise.
    """

    loss: float
    sharpness: float
    top_eigenvalues: tuple[float, ...]
    sharpness_converged: bool
    s: dict[int, float]
    s_converged: dict[int, bool]

    def as_dict(self) -> dict:
        """Plain JSON-serializable numbers (orders as string keys)."""
        record = asdict(self)
        record["top_eigenvalues"] = list(self.top_eigenvalues)
        record["s"] = {str(k): v for k, v in self.s.items()}
        record["s_converged"] = {str(k): v for k, v in self.s_converged.items()}
        return record


def measure_minimum(
    model: nn.Module,
    loss_fn: LossFn,
    data: Batch | Sequence[Batch],
    *,
    top_k: int = 10,
    orders: Sequence[int] = NONUNIFORMITY_ORDERS,
    max_matvecs: int = 100,
    tol: float = 1e-4,
    dtype: torch.dtype = torch.float64,
    chunk_size: int = 64,
    seed: int = 0,
) -> MinimumCurvature:
    """Loss, the top-`top_k` Hessian eigenvalues (a is the first) and s_k for each order, by Lanczos.

    Each Lanczos run stops at relative residual `tol` or after `max_matvecs` products (exact once that reaches the
    number of parameters); per-example products run `chunk_size` examples at a time; every random start derives
    from `seed`.
    """
    if not (isinstance(top_k, int) and top_k >= 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if not (isinstance(max_matvecs, int) and max_matvecs >= top_k):
        raise ValueError(f"max_matvecs must be an integer of at least top_k={top_k}, got {max_matvecs!r}")
    bad = [k for k in orders if not (isinstance(k, int) and k >= 2)]
    if bad:
        raise ValueError(f"non-uniformity orders must be integers >= 2, got {bad}")
    generator = torch.Generator().manual_seed(seed)
    hessian = HessianOperator(model, loss_fn, data, dtype=dtype)
    k = min(top_k, hessian.size)
    top = lanczos(hessian, k=k, max_iter=max(k, min(max_matvecs, hessian.size)), tol=tol, generator=generator)
    s, s_converged = {}, {}
    for order in orders:
        result = nonuniformity_result(
            model, loss_fn, data, order, dtype=dtype, chunk_size=chunk_size, tol=tol, max_iter=max_matvecs,
            generator=generator,
        )
        s[order], s_converged[order] = result.value, result.converged
    return MinimumCurvature(
        loss=hessian.loss(),
        sharpness=float(top.eigenvalues[0]),
        top_eigenvalues=tuple(float(v) for v in top.eigenvalues),
        sharpness_converged=bool(top.converged),
        s=s,
        s_converged=s_converged,
    )
