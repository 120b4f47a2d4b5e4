"""Stability bounds and linearized dynamics against hand-computed 1-D expectations and brute-force simulation."""
import math

import pytest
import torch

from samscale.theory import (
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

DT = torch.float64
SETTINGS = [(0.1, 0.05), (0.01, 0.5), (0.5, 0.01), (1.0, 1.0)]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scalar_hessians(h: torch.Tensor) -> torch.Tensor:
    return h.to(DT).reshape(-1, 1, 1)


def one_d_second_moment(h: torch.Tensor, eta: float, rho: float) -> float:
    """E[A²] for scalar curvatures with batch size 1: the mean of (1 − ηh_i − ηρh_i²)²."""
    return float(((1 - eta * h - eta * rho * h**2) ** 2).mean())


@pytest.mark.parametrize("eta,rho", SETTINGS)
def test_sharpness_bound_solves_a_plus_rho_a_squared_equals_two_over_eta(eta, rho):
    a = usam_sharpness_bound(eta, rho)
    assert a + rho * a**2 == pytest.approx(2 / eta, rel=1e-12)
    assert a == pytest.approx((math.sqrt(1 + 8 * rho / eta) - 1) / (2 * rho), rel=1e-10)
    assert a < sgd_sharpness_bound(eta)


def test_sharpness_bound_tends_to_the_sgd_bound():
    assert usam_sharpness_bound(0.1, 0.0) == sgd_sharpness_bound(0.1) == 20.0
    assert usam_sharpness_bound(0.1, 1e-12) == pytest.approx(20.0, rel=1e-9)


@pytest.mark.parametrize("eta,rho", SETTINGS + [(0.1, 0.0)])
def test_sharpness_bound_is_exactly_tight_in_1d_with_equal_curvatures(eta, rho):
    a = usam_sharpness_bound(eta, rho)
    assert exact_mean_square_stability(torch.full((5, 1, 1), a, dtype=DT), eta, rho) == pytest.approx(1.0, abs=1e-12)
    for factor, stable in [(0.99, True), (1.01, False)]:
        hessians = torch.full((5, 1, 1), factor * a, dtype=DT)
        radius = exact_mean_square_stability(hessians, eta, rho)
        assert radius == pytest.approx(one_d_second_moment(hessians.flatten(), eta, rho), rel=1e-12)
        norms = simulate_linearized(hessians, eta, rho, n_steps=200, n_runs=3, generator=seeded(0))
        assert norms[-1] / norms[0] == pytest.approx(radius**200, rel=1e-9)
        assert (float(norms[-1]) < float(norms[0])) == stable


def edge_of_stability(h: torch.Tensor, eta: float, rho: float) -> torch.Tensor:
    """Rescale h ≥ 0 by the largest c for which the 1-D dynamics are mean-square stable (E[A²] = 1), by bisection."""
    low, high = 0.0, 1.0
    while one_d_second_moment(high * h, eta, rho) <= 1:
        high *= 2
    for _ in range(80):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if one_d_second_moment(mid * h, eta, rho) <= 1 else (low, mid)
    return low * h


def measured(h: torch.Tensor) -> dict[str, float]:
    """a and s_k = (E[h^k] − E[h]^k)^{1/k} of scalar curvatures (the 1-D S_k)."""
    a = float(h.mean())
    return {"sharpness": a, **{f"s{k}": max(float((h**k).mean()) - a**k, 0.0) ** (1 / k) for k in (2, 3, 4)}}


@pytest.mark.parametrize("eta,rho", SETTINGS)
def test_usam_bounds_hold_for_random_1d_problems_at_the_edge_of_stability(eta, rho):
    """In 1-D, E[A²] ≤ 1 is necessary and sufficient, so every bound must hold for every stable set of h_i."""
    g = seeded(1)
    bounds = StabilityBounds(eta, rho).as_dict()
    worst = {name: 0.0 for name in bounds}
    for trial in range(200):
        n = int(torch.randint(2, 12, (1,), generator=g))
        spread = torch.rand(n, generator=g, dtype=DT) ** (1 + 4 * torch.rand(1, generator=g, dtype=DT))
        h = edge_of_stability(spread, eta, rho)
        assert one_d_second_moment(h, eta, rho) == pytest.approx(1.0, abs=1e-9)
        assert exact_mean_square_stability(scalar_hessians(h), eta, rho) == pytest.approx(1.0, abs=1e-9)
        values = measured(h)
        for name, value in values.items():
            assert value <= bounds[name] * (1 + 1e-9), (name, trial)
            worst[name] = max(worst[name], value / bounds[name])
        assert values["s2"] <= (1 / eta) * (1 + 1e-9)  # the SGD-like 1-D bound holds for USAM too (module docstring)
    assert worst["sharpness"] > 0.99  # tight: reached by (nearly) equal curvatures
    assert min(worst.values()) > 0.05  # the random problems do probe every bound


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_sgd_s2_bound_holds_and_matches_the_batch_variance_formula(batch_size):
    """For SGD in 1-D, E[A²] = (1 − ηa)² + η²·(n − B)/(B(n − 1))·s₂² over uniform B-subsets (Wu et al., 2018)."""
    g = seeded(2)
    n, eta = 6, 0.1
    for _ in range(30):
        h = torch.rand(n, generator=g, dtype=DT) * 40
        a, s2_squared = float(h.mean()), float(h.var(unbiased=False))
        variance_factor = (n - batch_size) / (batch_size * (n - 1))
        expected = (1 - eta * a) ** 2 + eta**2 * variance_factor * s2_squared
        radius = exact_mean_square_stability(scalar_hessians(h), eta, 0.0, batch_size)
        assert radius == pytest.approx(expected, rel=1e-12)
        if radius <= 1:
            assert math.sqrt(s2_squared) <= sgd_s2_bound(eta, batch_size, n)
            assert a <= sgd_sharpness_bound(eta)


def test_paper_second_moment_identity_and_sufficient_condition():
    """E[A_ξ²] = (I − ηH − ηρH²)² + η(η − 2ρ)S₂ + 2η²ρS₃ + η²ρ²S₄ for batch size 1 (docs/PROTOCOL.md §6)."""
    g = seeded(3)
    roots = torch.randn(5, 3, 3, generator=g, dtype=DT)
    hessians = roots @ roots.transpose(1, 2)
    eta, rho = 0.05, 0.2
    eye = torch.eye(3, dtype=DT)
    transitions = eye - eta * hessians - eta * rho * hessians @ hessians
    direct = (transitions @ transitions).mean(0)
    mean = hessians.mean(0)

    def s(k):
        return torch.stack([torch.linalg.matrix_power(h, k) for h in hessians]).mean(0) - torch.linalg.matrix_power(
            mean, k
        )

    base = eye - eta * mean - eta * rho * mean @ mean
    formula = base @ base + eta * (eta - 2 * rho) * s(2) + 2 * eta**2 * rho * s(3) + eta**2 * rho**2 * s(4)
    torch.testing.assert_close(formula, direct, rtol=1e-12, atol=1e-12)
    top = float(torch.linalg.eigvalsh(direct)[-1])
    assert sufficient_stability(hessians, eta, rho) == pytest.approx(top, rel=1e-12)


def small_noise_problem():
    """Four 3×3 per-example Hessians close to a common one, so Monte Carlo means of ‖x_t‖² have small variance."""
    g = seeded(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=DT))
    common = q @ torch.diag(torch.tensor([1.0, 0.5, 0.2], dtype=DT)) @ q.T
    noise = torch.randn(4, 3, 3, generator=g, dtype=DT) * 0.05
    return common + (noise + noise.transpose(1, 2)) / 2


@pytest.mark.parametrize("eta", [1.8, 1.85])
def test_exact_mean_square_stability_agrees_with_long_simulation(eta):
    hessians, rho = small_noise_problem(), 0.1
    radius = exact_mean_square_stability(hessians, eta, rho)
    norms = simulate_linearized(hessians, eta, rho, n_steps=60, n_runs=20000, generator=seeded(4))
    rate = float(norms[-1] / norms[20]) ** (1 / 40)
    assert rate == pytest.approx(radius, rel=0.01)
    assert (radius < 1) == (float(norms[-1]) < float(norms[20]))
    assert sufficient_stability(hessians, eta, rho) >= radius


def test_second_moment_recursion_converges_at_the_exact_rate():
    """Iterating P ← mean_i A_i P A_i directly: trace(P_t) grows like radius^t."""
    hessians, eta, rho = small_noise_problem(), 1.7, 0.1
    transitions = torch.eye(3, dtype=DT) - eta * hessians - eta * rho * hessians @ hessians
    p = torch.eye(3, dtype=DT)
    for _ in range(400):
        previous = p
        p = (transitions @ p @ transitions).mean(0)
        p = p / p.trace()
    growth = float((transitions @ previous @ transitions).mean(0).trace() / previous.trace())
    assert growth == pytest.approx(exact_mean_square_stability(hessians, eta, rho), rel=1e-10)


def test_bound_formulas_and_container():
    eta, rho = 0.2, 0.05
    assert usam_s2_bound(eta, rho) == pytest.approx(math.sqrt(2 / (eta * rho)))
    assert usam_s3_bound(eta, rho) == pytest.approx((2 / (eta**2 * rho)) ** (1 / 3))
    assert usam_s4_bound(eta, rho) == pytest.approx(math.sqrt(2) / math.sqrt(eta * rho))
    assert usam_s2_bound(eta, rho, batch_size=4, n=10) == pytest.approx(math.sqrt(2 / (eta * rho) * 4 * 9 / 6))
    assert sgd_s2_bound(eta, 1, 10) == pytest.approx(1 / eta)
    assert sgd_s2_bound(eta, 10, 10) == math.inf
    sgd = StabilityBounds(eta, 0.0, batch_size=4, n=10)
    assert sgd.as_dict() == {"sharpness": 10.0, "s2": sgd_s2_bound(eta, 4, 10), "s3": math.inf, "s4": math.inf}
    assert StabilityBounds(eta, rho).satisfied_by(sharpness=7.0, s2=100.0) == {"sharpness": True, "s2": False}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="eta must be positive, got 0"):
        sgd_sharpness_bound(0)
    with pytest.raises(ValueError, match="rho must be non-negative, got -0.1"):
        usam_sharpness_bound(0.1, -0.1)
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, n=5\], got 6"):
        sgd_s2_bound(0.1, 6, 5)
    with pytest.raises(ValueError, match="unknown quantities"):
        StabilityBounds(0.1).satisfied_by(s5=1.0)
    with pytest.raises(ValueError, match=r"shape \(n, d, d\)"):
        exact_mean_square_stability(torch.ones(3, 2), 0.1)
    with pytest.raises(ValueError, match="exceed max_batches=10"):
        exact_mean_square_stability(torch.ones(8, 1, 1), 0.1, 0.0, 4, max_batches=10)
