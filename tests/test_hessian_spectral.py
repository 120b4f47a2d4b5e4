"""Lanczos, power iteration, Hutchinson and SLQ against eigvalsh / exact traces of explicit matrices."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.hessian import (
    HessianOperator,
    MatrixOperator,
    frobenius_norm,
    hutchinson_trace,
    lanczos,
    power_iteration,
    slq_moments,
    spectral_density,
)

DT = torch.float64


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def matrix_with_spectrum(eigenvalues, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=seeded(seed), dtype=DT))
    return q @ torch.diag(torch.as_tensor(eigenvalues, dtype=DT)) @ q.T


@pytest.fixture(scope="module")
def mlp_hessian():
    """A tiny tanh MLP's Hessian as an operator, and the same Hessian made explicit by torch.func.hessian."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    x = torch.randn(30, 5, generator=seeded(1), dtype=DT)
    y = torch.randint(0, 3, (30,), generator=seeded(2))
    shapes = [p.shape for p in model.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        w1, b1, w2, b2 = (t.view(s) for t, s in zip(torch.split(flat, [s.numel() for s in shapes]), shapes))
        return F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)

    return HessianOperator(model, F.cross_entropy, (x, y)), torch.func.hessian(loss)(w)


def test_lanczos_top_k_matches_eigvalsh_of_explicit_hessian(mlp_hessian):
    op, exact = mlp_hessian
    expected = torch.linalg.eigvalsh(exact).flip(0)[:5]
    result = lanczos(op, k=5, tol=1e-10, generator=seeded(3))
    assert result.converged and result.n_matvec < op.size
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-8, atol=0)
    residual = exact @ result.eigenvectors - result.eigenvectors * result.eigenvalues
    assert residual.norm(dim=0).max() < 1e-8 * float(expected[0])
    torch.testing.assert_close(result.eigenvectors.T @ result.eigenvectors, torch.eye(5, dtype=DT), atol=1e-10, rtol=0)
    assert len(result.history) == result.n_matvec
    assert result.history[-1] == pytest.approx(float(expected[0]), rel=1e-12)


def test_lanczos_smallest_and_largest_magnitude_on_an_indefinite_matrix():
    spectrum = [-7.0, -3.0, -1.0, 0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 6.0] + [0.25] * 20
    a = matrix_with_spectrum(spectrum, seed=4)
    smallest = lanczos(a, k=2, which="SA", tol=1e-12, generator=seeded(5))
    torch.testing.assert_close(smallest.eigenvalues, torch.tensor([-7.0, -3.0], dtype=DT), rtol=1e-10, atol=1e-10)
    largest_magnitude = lanczos(a, k=3, which="LM", tol=1e-12, generator=seeded(6))
    torch.testing.assert_close(
        largest_magnitude.eigenvalues, torch.tensor([-7.0, 6.0, 4.0], dtype=DT), rtol=1e-10, atol=1e-10
    )


def test_lanczos_restarts_when_the_krylov_space_is_invariant():
    """A start vector inside a 2-dimensional eigenspace spans an invariant subspace after 2 steps."""
    a = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=DT))
    v0 = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0], dtype=DT)
    result = lanczos(a, k=3, v0=v0, tol=1e-12, generator=seeded(7))
    torch.testing.assert_close(result.eigenvalues, torch.tensor([5.0, 4.0, 3.0], dtype=DT), rtol=1e-12, atol=1e-12)


def test_lanczos_basis_stays_orthonormal_on_a_long_run_with_outliers():
    """150 steps on a 200-dim spectrum with 3 big outliers over a dense cluster: without full reorthogonalization
    the outliers converge early and come back as ghost copies; with it, Q stays orthonormal and no copy appears."""
    from samscale.hessian.lanczos import LanczosProcess, orthogonalize, random_unit_vector
    from samscale.hessian.operator import as_operator

    g = torch.Generator().manual_seed(0)
    eigenvalues = torch.cat([torch.tensor([100.0, 60.0, 30.0], dtype=torch.float64),
                             torch.rand(197, generator=g, dtype=torch.float64)])
    rotation, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=torch.float64))
    matrix = rotation @ torch.diag(eigenvalues) @ rotation.T
    process = LanczosProcess(as_operator(matrix), random_unit_vector(200, dtype=torch.float64, generator=g), 150)
    process.run()
    q = process.basis[: process.steps]
    assert process.steps == 150
    assert float((q @ q.T - torch.eye(150, dtype=torch.float64)).abs().max()) < 1e-12
    ritz = torch.linalg.eigvalsh(process.tridiagonal())
    assert int((ritz > 10).sum()) == 3  # each outlier once: no ghosts
    assert torch.allclose(ritz[-3:], torch.tensor([30.0, 60.0, 100.0], dtype=torch.float64), rtol=1e-10)
    # a vector almost inside the basis: one Gram–Schmidt pass cancels badly, the second pass fixes it
    nearly = q[:10].sum(dim=0) + 1e-9 * random_unit_vector(200, dtype=torch.float64, generator=g)
    rest = orthogonalize(nearly, q[:10])
    assert float((q[:10] @ rest).abs().max()) < 1e-12 * float(rest.norm())  # one pass leaves ≈ 1e-6 of it


def test_power_iteration_agrees_with_lanczos_and_eigvalsh(mlp_hessian):
    op, exact = mlp_hessian
    top = float(torch.linalg.eigvalsh(exact)[-1])
    power = power_iteration(op, tol=1e-12, max_iter=5000, generator=seeded(8))
    fast = lanczos(op, k=1, tol=1e-10, generator=seeded(8))
    assert power.converged
    assert float(power.eigenvalues[0]) == pytest.approx(top, rel=1e-6)
    assert float(fast.eigenvalues[0]) == pytest.approx(top, rel=1e-10)
    assert fast.n_matvec < power.n_matvec
    assert abs(float(power.eigenvectors[:, 0] @ fast.eigenvectors[:, 0])) == pytest.approx(1.0, abs=1e-4)


def test_hutchinson_trace_within_three_standard_errors(mlp_hessian):
    op, exact = mlp_hessian
    estimate = hutchinson_trace(op, 200, generator=seeded(9))
    assert estimate.standard_error > 0
    assert abs(estimate.estimate - float(exact.trace())) < 3 * estimate.standard_error


def test_hutchinson_is_exact_for_a_diagonal_matrix():
    """zᵀDz = tr(D) for every Rademacher z, so the estimate is exact with zero spread."""
    estimate = hutchinson_trace(torch.diag(torch.tensor([1.0, -2.0, 3.5], dtype=DT)), 10, generator=seeded(10))
    assert estimate.estimate == pytest.approx(2.5, abs=1e-14) and estimate.standard_error == pytest.approx(0.0)


def test_frobenius_norm_within_three_standard_errors(mlp_hessian):
    op, exact = mlp_hessian
    estimate = frobenius_norm(op, 200, generator=seeded(11))
    assert abs(estimate.estimate - float(torch.linalg.matrix_norm(exact))) < 3 * estimate.standard_error


def test_slq_moments_match_exact_normalized_traces(mlp_hessian):
    op, exact = mlp_hessian
    eigenvalues = torch.linalg.eigvalsh(exact)
    moments = slq_moments(op, (1, 2, 3, 4), n_runs=40, n_steps=10, generator=seeded(12))
    for k, estimate in moments.items():
        truth = float((eigenvalues**k).mean())
        assert abs(estimate.estimate - truth) < 4 * estimate.standard_error + 1e-12 * abs(truth), k


def test_slq_quadrature_is_exact_per_probe_for_low_degree():
    """With a single ±1 probe z the quadrature equals zᵀA^k z / P for k ≤ 2m − 1 (here m = 3 steps, k ≤ 5)."""
    a = matrix_with_spectrum(torch.linspace(-1, 3, 12).tolist(), seed=13)
    probe_values = slq_moments(a, (1, 3, 5), n_runs=2, n_steps=3, generator=seeded(14))
    first = torch.Generator().manual_seed(14)
    z = (torch.randint(0, 2, (12,), generator=first) * 2 - 1).to(DT)
    w = (torch.randint(0, 2, (12,), generator=first) * 2 - 1).to(DT)
    for k in (1, 3, 5):
        power = torch.linalg.matrix_power(a, k)
        expected = 0.5 * float(z @ power @ z + w @ power @ w) / 12
        assert probe_values[k].estimate == pytest.approx(expected, rel=1e-10)


def test_spectral_density_integrates_to_one_and_centres_on_the_mean_eigenvalue(mlp_hessian):
    op, exact = mlp_hessian
    density = spectral_density(op, n_runs=4, n_steps=op.size, generator=seeded(15))
    assert float(torch.trapezoid(density.density, density.grid)) == pytest.approx(1.0, abs=1e-12)
    assert bool((density.density >= 0).all())
    eigenvalues = torch.linalg.eigvalsh(exact)
    assert float(density.grid[0]) < float(eigenvalues[0]) and float(density.grid[-1]) > float(eigenvalues[-1])
    mean = float(torch.trapezoid(density.grid * density.density, density.grid))
    weights_mean = sum(float((w * t).sum()) for t, w in zip(density.nodes, density.weights)) / 4
    assert mean == pytest.approx(weights_mean, rel=1e-6)


def test_spectral_density_of_known_spectrum_peaks_at_its_eigenvalues():
    a = matrix_with_spectrum([1.0] * 10 + [5.0] * 30, seed=16)
    density = spectral_density(a, n_runs=4, n_steps=10, sigma=0.1, generator=seeded(17))
    grid, values = density.grid, density.density
    mass_near = lambda c: float(torch.trapezoid(values * ((grid - c).abs() < 0.5), grid))  # noqa: E731
    assert mass_near(1.0) + mass_near(5.0) == pytest.approx(1.0, abs=1e-6)
    assert 0.1 < mass_near(1.0) < 0.4  # 10 of 40 eigenvalues, up to probe noise


def test_bad_arguments_are_named():
    a = torch.eye(3, dtype=DT)
    with pytest.raises(ValueError, match="k must be between 1 and the operator size 3, got 4"):
        lanczos(a, k=4)
    with pytest.raises(ValueError, match="which must be one of.*'BE'"):
        lanczos(a, k=1, which="BE")
    with pytest.raises(ValueError, match="square matrix"):
        MatrixOperator(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n_samples must be at least 2, got 1"):
        hutchinson_trace(a, 1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        spectral_density(a, sigma=-1.0)
