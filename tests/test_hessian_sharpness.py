"""Worst- and average-case sharpness on quadratics, where both have closed forms."""
import pytest
import torch
from torch import nn

from samscale.hessian import average_case_sharpness, worst_case_sharpness

DT = torch.float64


class Point(nn.Module):
    """A model whose output is its own parameter vector w (one row per example), so losses are functions of w."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w.expand(len(x), -1)


def quadratic_loss(a: torch.Tensor, centre: torch.Tensor):
    """L(w) = ½(w − c)ᵀA(w − c) for every example."""

    def loss(out, _):
        d = out - centre
        return 0.5 * ((d @ a) * d).sum(1).mean()

    return loss


def rank_one_loss(out, u):
    """Example i contributes ½(u_iᵀw)², so a set of examples has Hessian mean_i u_i u_iᵀ."""
    return 0.5 * ((out * u).sum(1) ** 2).mean()


def spd(eigenvalues, seed):
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=seeded(seed), dtype=DT))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=DT)) @ q.T


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dummy_batch(n: int = 3):
    return torch.zeros(n, 1, dtype=DT), torch.zeros(n, dtype=DT)


def test_zero_gradient_quadratic_gives_half_rho_squared_lambda_max_and_restores_weights():
    a = spd([4.0, 2.0, 1.0, -0.5, 0.3], seed=0)
    centre = torch.randn(5, generator=seeded(1), dtype=DT)
    model = Point(centre)
    before = model.w.detach().clone()
    rho = 0.1
    value = worst_case_sharpness(model, quadratic_loss(a, centre), dummy_batch(), rho, steps=60, generator=seeded(2))
    assert value == pytest.approx(0.5 * rho**2 * 4.0, rel=1e-8)
    assert torch.equal(model.w.detach(), before) and model.w.grad is None


def trust_region_maximum(g: torch.Tensor, a: torch.Tensor, rho: float) -> float:
    """max_{‖δ‖≤ρ} gᵀδ + ½δᵀAδ: δ = (νI − A)⁻¹g with ν > λ_max chosen by bisection so that ‖δ‖ = ρ."""
    eye = torch.eye(len(g), dtype=DT)
    low = float(torch.linalg.eigvalsh(a)[-1]) + 1e-12
    high = low + float(g.norm()) / rho + 1.0
    for _ in range(200):
        nu = 0.5 * (low + high)
        if float(torch.linalg.solve(nu * eye - a, g).norm()) > rho:
            low = nu
        else:
            high = nu
    delta = torch.linalg.solve(high * eye - a, g)
    return float(g @ delta + 0.5 * delta @ a @ delta)


def test_nonzero_gradient_quadratic_matches_the_trust_region_solution():
    a = spd([3.0, 1.0, 0.5, -1.0], seed=3)
    centre = torch.zeros(4, dtype=DT)
    w = torch.randn(4, generator=seeded(4), dtype=DT) * 0.05
    rho = 0.2
    value = worst_case_sharpness(Point(w), quadratic_loss(a, centre), dummy_batch(), rho, steps=100)
    assert value == pytest.approx(trust_region_maximum(a @ w, a, rho), rel=1e-8)
    assert value > float((a @ w).norm()) * rho  # curvature adds to the first-order term ρ‖g‖


def test_m_sharpness_averages_per_chunk_maxima():
    u = torch.randn(6, 3, generator=seeded(5), dtype=DT)
    x = torch.zeros(6, 1, dtype=DT)
    model = Point(torch.zeros(3, dtype=DT))
    rho = 0.3

    def exact(indices):
        h = u[indices].T @ u[indices] / len(indices)
        return 0.5 * rho**2 * float(torch.linalg.eigvalsh(h)[-1])

    full = worst_case_sharpness(model, rank_one_loss, (x, u), rho, steps=300, generator=seeded(6))
    assert full == pytest.approx(exact(list(range(6))), rel=1e-6)
    per_example = worst_case_sharpness(model, rank_one_loss, (x, u), rho, steps=60, m=1, generator=seeded(7))
    assert per_example == pytest.approx(0.5 * rho**2 * float((u * u).sum(1).mean()), rel=1e-10)
    pairs = worst_case_sharpness(model, rank_one_loss, [(x, u)], rho, steps=300, m=4, generator=seeded(8))
    assert pairs == pytest.approx((4 * exact([0, 1, 2, 3]) + 2 * exact([4, 5])) / 6, rel=1e-6)
    assert full < pairs < per_example


def test_average_case_sharpness_is_half_sigma_squared_trace():
    a = spd([2.0, 1.0, 0.5, 0.25], seed=9)
    centre = torch.randn(4, generator=seeded(10), dtype=DT)
    model = Point(centre)
    sigma = 0.05
    estimate = average_case_sharpness(model, quadratic_loss(a, centre), dummy_batch(), sigma, 400, generator=seeded(11))
    truth = 0.5 * sigma**2 * float(a.trace())
    assert abs(estimate.estimate - truth) < 4 * estimate.standard_error
    assert estimate.standard_error < 0.2 * truth
    assert torch.equal(model.w.detach(), centre)


def test_bad_arguments_are_named():
    model = Point(torch.zeros(2, dtype=DT))
    loss = quadratic_loss(torch.eye(2, dtype=DT), torch.zeros(2, dtype=DT))
    with pytest.raises(ValueError, match="rho must be positive, got 0"):
        worst_case_sharpness(model, loss, dummy_batch(), 0)
    with pytest.raises(ValueError, match="m must be a positive integer or None, got 0"):
        worst_case_sharpness(model, loss, dummy_batch(), 0.1, m=0)
    with pytest.raises(ValueError, match="sigma must be positive, got -1"):
        average_case_sharpness(model, loss, dummy_batch(), -1)
