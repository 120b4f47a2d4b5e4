"""Theory of stochastic unnormalized SAM: linear-stability bounds and linearized dynamics, convergence rates."""
from samscale.theory.convergence import (
    LeastSquaresConstants,
    fit_contraction,
    least_squares_constants,
    run_sam_least_squares,
    run_usam_least_squares,
    usam_rate,
    usam_step_size,
)
from samscale.theory.stability import (
    StabilityBounds,
    exact_mean_square_stability,
    sgd_s2_bound,
    sgd_sharpness_bound,
    simulate_linearized,
    sufficient_stability,
    usam_s2_bound,
    usam_s3_bound,
    usam_s4_bound,
    usam_sharpness_bound,
)

__all__ = [
    "LeastSquaresConstants",
    "StabilityBounds",
    "exact_mean_square_stability",
    "fit_contraction",
    "least_squares_constants",
    "run_sam_least_squares",
    "run_usam_least_squares",
    "sgd_s2_bound",
    "sgd_sharpness_bound",
    "simulate_linearized",
    "sufficient_stability",
    "usam_rate",
    "usam_s2_bound",
    "usam_s3_bound",
    "usam_s4_bound",
    "usam_sharpness_bound",
    "usam_step_size",
]
