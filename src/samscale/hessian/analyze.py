"""One call that runs the requested curvature analyses and returns plain, JSON-serializable numbers."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from samscale.hessian.density import slq_moments, spectral_density
from samscale.hessian.lanczos import lanczos
from samscale.hessian.moments import nonuniformity
from samscale.hessian.objective import Batch, LossFn, as_batches
from samscale.hessian.operator import HessianOperator
from samscale.hessian.sharpness import average_case_sharpness, worst_case_sharpness
from samscale.hessian.trace import frobenius_norm, hutchinson_trace
from samscale.spec.catalog import ANALYSIS_NAMES

#: The analyses `analyze` can run; the spec validates `analysis.what` against the same list.
ANALYSES = ANALYSIS_NAMES


def analyze(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batch | Iterable[Batch],
    what: Sequence[str] = ("lambda_max", "trace", "moments", "density"),
    *,
    top_k: int = 5,
    n_probes: int = 20,
    moment_orders: Sequence[int] = (1, 2, 3, 4),
    density_steps: int = 80,
    density_points: int = 200,
    nonuniformity_orders: Sequence[int] = (2, 3, 4),
    rho: float = 0.05,
    sigma: float = 0.01,
    ascent_steps: int = 20,
    bn_mode: str = "eval",
    dtype: torch.dtype | None = None,
    hvp_mode: str = "auto",
    cache: bool | None = None,
    seed: int = 0,
) -> dict:
    """Curvature summary of the mean loss over `batches`; `what` picks among ANALYSES.

    Returns {"n_params", "n_examples", "loss", and one entry per analysis}: "lambda_max" (top-k eigenvalues by
    Lanczos, with matvec count), "trace" and "frobenius" (Hutchinson, with standard errors), "moments"
    (SLQ tr(H^k)/P), "density" (SLQ density on `density_points` grid points), "nonuniformity" (s_k, eval-mode only),
    and the sharpness measures at radius `rho` / noise `sigma`. `hvp_mode` and `cache` configure the
    HessianOperator (the default "auto" picks the fastest exact product, normally double backward through cached
    gradient graphs); "hvp_mode" in the report records the product used. Every random choice derives from `seed`.
    """
    unknown = [name for name in what if name not in ANALYSES]
    if unknown:
        raise ValueError(f"unknown analyses {unknown}; choose from {list(ANALYSES)}")
    batches = as_batches(batches)
    op = HessianOperator(model, loss_fn, batches, bn_mode=bn_mode, dtype=dtype, hvp_mode=hvp_mode, cache=cache)
    generator = torch.Generator().manual_seed(seed)
    report: dict = {"n_params": op.size, "n_examples": op.objective.n_examples, "loss": op.loss()}
    if "lambda_max" in what:
        result = lanczos(op, k=min(top_k, op.size), generator=generator)
        report["lambda_max"] = {
            "value": float(result.eigenvalues[0]),
            "top_eigenvalues": [float(v) for v in result.eigenvalues],
            "n_matvec": result.n_matvec,
            "converged": result.converged,
        }
    if "trace" in what:
        estimate = hutchinson_trace(op, n_probes, generator=generator)
        report["trace"] = {"value": estimate.estimate, "standard_error": estimate.standard_error}
    if "frobenius" in what:
        estimate = frobenius_norm(op, n_probes, generator=generator)
        report["frobenius"] = {"value": estimate.estimate, "standard_error": estimate.standard_error}
    if "moments" in what:
        moments = slq_moments(op, moment_orders, n_runs=n_probes, generator=generator)
        report["moments"] = {
            str(k): {"value": e.estimate, "standard_error": e.standard_error} for k, e in moments.items()
        }
    if "density" in what:
        density = spectral_density(
            op, n_runs=max(1, n_probes // 2), n_steps=density_steps, n_grid=density_points, generator=generator
        )
        report["density"] = {"grid": density.grid.tolist(), "density": density.density.tolist()}
    if any(name in what for name in ("lambda_max", "trace", "frobenius", "moments", "density")):
        report["hvp_mode"] = op.mode_used
    if "nonuniformity" in what:
        report["nonuniformity"] = {
            str(k): nonuniformity(model, loss_fn, batches, k, dtype=dtype, generator=generator)
            for k in nonuniformity_orders
        }
    if "worst_case_sharpness" in what:
        report["worst_case_sharpness"] = {
            "rho": rho,
            "value": worst_case_sharpness(
                model, loss_fn, batches, rho, ascent_steps, bn_mode=bn_mode, dtype=dtype, generator=generator
            ),
        }
    if "average_case_sharpness" in what:
        estimate = average_case_sharpness(
            model, loss_fn, batches, sigma, n_probes, bn_mode=bn_mode, dtype=dtype, generator=generator
        )
        report["average_case_sharpness"] = {
            "sigma": sigma,
            "value": estimate.estimate,
            "standard_error": estimate.standard_error,
        }
    return report


def scalar_summary(report: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of an `analyze` report, flat: lambda_max, trace, s2, moment_2, sharpness, …"""
    scalars: dict[str, float] = {"loss": float(report["loss"])}
    for name in ("lambda_max", "trace", "frobenius", "worst_case_sharpness", "average_case_sharpness"):
        if name in report:
            scalars[name] = float(report[name]["value"])
    for k, entry in report.get("moments", {}).items():
        scalars[f"moment_{k}"] = float(entry["value"])
    for k, value in report.get("nonuniformity", {}).items():
        scalars[f"s{k}"] = float(value)
    return scalars
