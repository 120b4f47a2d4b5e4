"""USAM convergence on least squares: constants from their definitions, simulated decay against the bound."""
import math

import pytest
import torch

from samscale.theory import least_squares_constants, run_usam_least_squares, usam_rate, usam_step_size

DT = torch.float64


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def problem(n: int, d: int, seed: int, noise: float = 0.0):
    g = seeded(seed)
    features = torch.randn(n, d, generator=g, dtype=DT)
    targets = features @ torch.randn(d, generator=g, dtype=DT) + noise * torch.randn(n, generator=g, dtype=DT)
    return features, targets


def loss_parts(features, targets, x):
    residual = features @ x - targets
    return float((residual**2).mean() / 2), features.T @ residual / len(targets)


@pytest.mark.parametrize("n,d", [(5, 40), (30, 6)])
def test_constants_match_per_example_smoothness_and_the_pl_inequality(n, d):
    features, targets = problem(n, d, seed=0)
    beta, mu = least_squares_constants(features)
    per_example_top = [float(torch.linalg.eigvalsh(torch.outer(a, a))[-1]) for a in features]
    assert beta == pytest.approx(max(per_example_top), rel=1e-12)
    solution = torch.linalg.pinv(features) @ targets
    optimum, _ = loss_parts(features, targets, solution)
    g = seeded(1)
    for _ in range(50):  # ½‖∇f‖² ≥ μ(f − f*) everywhere
        x = solution + torch.randn(d, generator=g, dtype=DT)
        value, gradient = loss_parts(features, targets, x)
        assert 0.5 * float(gradient @ gradient) >= mu * (value - optimum) * (1 - 1e-10)
    eigenvalues, vectors = torch.linalg.eigh(features @ features.T / n)
    weakest = vectors[:, int((eigenvalues > 1e-10).nonzero()[0])]
    value, gradient = loss_parts(features, targets, solution + features.T @ weakest)
    assert 0.5 * float(gradient @ gradient) == pytest.approx(mu * (value - optimum), rel=1e-8)  # and it is tight


def test_rate_and_step_size_reduce_to_sgd_at_zero_radius():
    beta, mu = 10.0, 2.0
    assert usam_rate(beta, mu, 0.0) == pytest.approx(1 - mu**2 / beta**2)
    assert usam_step_size(beta, mu, 0.0) == pytest.approx(mu / beta**2)
    kappa, rho = beta / mu, 0.01
    expected = 1 - (1 - rho * beta * math.sqrt(kappa)) ** 2 / (kappa**2 * (1 + rho * beta) ** 2)
    assert usam_rate(beta, mu, rho) == pytest.approx(expected, rel=1e-14)
    assert usam_rate(beta, mu, 0.0) < usam_rate(beta, mu, rho) < 1


def test_one_step_matches_the_hand_computed_update():
    features, targets = problem(4, 3, seed=2)
    eta, rho = 0.05, 0.1
    gaps = run_usam_least_squares(features, targets, eta=eta, rho=rho, n_steps=1, batch_size=4)
    gradient = lambda x: features.T @ (features @ x - targets) / 4  # noqa: E731
    x0 = torch.zeros(3, dtype=DT)
    x1 = x0 - eta * gradient(x0 + rho * gradient(x0))
    optimum, _ = loss_parts(features, targets, torch.linalg.pinv(features) @ targets)
    assert float(gaps[1]) == pytest.approx(loss_parts(features, targets, x1)[0] - optimum, rel=1e-12)


@pytest.mark.parametrize("radius_fraction", [0.0, 0.5, 0.9])
def test_overparameterized_usam_decays_at_least_as_fast_as_the_bound(radius_fraction):
    features, targets = problem(4, 100, seed=3)
    beta, mu = least_squares_constants(features)
    rho = radius_fraction / (beta * math.sqrt(beta / mu))
    eta, rate = usam_step_size(beta, mu, rho), usam_rate(beta, mu, rho)
    g = seeded(4)
    runs = torch.stack(
        [run_usam_least_squares(features, targets, eta=eta, rho=rho, n_steps=400, generator=g) for _ in range(20)]
    )
    mean = runs.mean(0)
    bound = mean[0] * rate ** torch.arange(401, dtype=DT)
    assert bool((mean <= bound).all())
    assert float(mean[-1] / mean[0]) < 0.5 * rate**400  # strictly faster than the worst case
    fitted = float(torch.exp((mean[-1].log() - mean[200].log()) / 200))
    assert fitted < 1  # linear convergence toward f* = 0


def test_underparameterized_noisy_problem_plateaus_above_zero():
    features, targets = problem(40, 5, seed=5, noise=0.5)
    beta, mu = least_squares_constants(features)
    eta = usam_step_size(beta, mu, 0.0) * 20
    gaps = torch.stack(
        [
            run_usam_least_squares(features, targets, eta=eta, rho=0.01, n_steps=3000, generator=seeded(6 + s))
            for s in range(5)
        ]
    ).mean(0)
    late, later = float(gaps[1500:2250].mean()), float(gaps[2250:].mean())
    assert late > 1e-3 * float(gaps[0]) and later > 1e-3 * float(gaps[0])  # a noise floor, not convergence
    assert 0.5 < later / late < 2  # flat
    assert bool((gaps >= -1e-12).all())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"rho must lie in \[0, 1/\(β√κ\)\)"):
        usam_rate(10.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="mu must not exceed beta"):
        usam_step_size(1.0, 2.0, 0.0)
    with pytest.raises(ValueError, match=r"features must be a non-empty n × d matrix, got shape \(3,\)"):
        least_squares_constants(torch.ones(3))
    with pytest.raises(ValueError, match="batch_size must be an integer in"):
        run_usam_least_squares(torch.ones(3, 2), torch.ones(3), eta=0.1, rho=0.0, n_steps=1, batch_size=4)
