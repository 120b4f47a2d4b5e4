"""Curvature of a model's loss: Hessian and per-example moment operators, and the spectral algorithms that use them.

Operators (`HessianOperator`, `MomentOperator`, `NonUniformityOperator`) apply matrices by Hessian-vector products
through torch.func and never modify the model; algorithms (`lanczos`, `power_iteration`, `hutchinson_trace`,
`spectral_density`, `slq_moments`) accept any `LinearOperator` or explicit symmetric matrix.
"""
from samscale.hessian.analyze import ANALYSES, analyze
from samscale.hessian.density import SpectralDensity, slq_moments, spectral_density
from samscale.hessian.lanczos import lanczos
from samscale.hessian.minimum import MinimumCurvature, measure_minimum
from samscale.hessian.moments import (
    MomentOperator,
    NonUniformity,
    NonUniformityOperator,
    nonuniformity,
    nonuniformity_result,
)
from samscale.hessian.objective import Objective
from samscale.hessian.operator import HessianOperator, LinearOperator, MatrixOperator
from samscale.hessian.power import power_iteration
from samscale.hessian.results import EigenResult, Estimate
from samscale.hessian.sharpness import average_case_sharpness, worst_case_sharpness
from samscale.hessian.trace import frobenius_norm, hutchinson_trace

__all__ = [
    "ANALYSES",
    "EigenResult",
    "Estimate",
    "HessianOperator",
    "LinearOperator",
    "MatrixOperator",
    "MinimumCurvature",
    "MomentOperator",
    "NonUniformity",
    "NonUniformityOperator",
    "Objective",
    "SpectralDensity",
    "analyze",
    "average_case_sharpness",
    "frobenius_norm",
    "hutchinson_trace",
    "lanczos",
    "measure_minimum",
    "nonuniformity",
    "nonuniformity_result",
    "power_iteration",
    "slq_moments",
    "spectral_density",
    "worst_case_sharpness",
]
