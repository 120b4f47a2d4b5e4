"""Deflated Hutchinson (tr(H) = tr(VᵀHV) + Hutchinson on the rest) against exact traces of explicit matrices."""
import pytest
import torch

from samscale.hessian import hutchinson_trace


def outlier_matrix(size: int = 60, outliers=(50.0, 30.0, 20.0), seed: int = 0) -> torch.Tensor:
    """A symmetric matrix with a few large eigenvalues over a bulk in [-1, 1], like a network Hessian."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=g, dtype=torch.float64))
    values = torch.rand(size, generator=g, dtype=torch.float64) * 2 - 1
    values[: len(outliers)] = torch.tensor(outliers, dtype=torch.float64)
    return q @ torch.diag(values) @ q.T


def test_deflating_the_whole_space_gives_the_exact_trace():
    h = outlier_matrix(size=12)
    estimate = hutchinson_trace(h, 2, deflate=12, generator=torch.Generator().manual_seed(1))
    assert estimate.estimate == pytest.approx(float(torch.trace(h)), rel=1e-10)
    assert estimate.standard_error == pytest.approx(0.0, abs=1e-9)


def test_deflation_is_unbiased_and_cuts_the_error_on_outlying_eigenvalues():
    h = outlier_matrix()
    exact = float(torch.trace(h))
    plain = [hutchinson_trace(h, 10, generator=torch.Generator().manual_seed(s)).estimate for s in range(40)]
    deflated = [
        hutchinson_trace(h, 10, deflate=8, generator=torch.Generator().manual_seed(s)).estimate for s in range(40)
    ]
    plain_error = torch.tensor(plain, dtype=torch.float64) - exact
    deflated_error = torch.tensor(deflated, dtype=torch.float64) - exact
    # unbiased: the mean error is within 4 standard errors of zero
    assert abs(float(deflated_error.mean())) <= 4 * float(deflated_error.std()) / 40**0.5
    # the outliers carry almost all of ‖H‖_F: removing them leaves a far smaller spread
    assert float(deflated_error.abs().mean()) < 0.25 * float(plain_error.abs().mean())


def test_bad_deflation_is_named():
    with pytest.raises(ValueError, match="deflate.*-1"):
        hutchinson_trace(torch.eye(3), 4, deflate=-1)
