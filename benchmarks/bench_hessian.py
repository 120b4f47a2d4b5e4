"""Hessian toolkit benchmark: HVP cost by differentiation mode, and matvecs Lanczos vs power iteration need for λ_max.

(a) Seconds per Hessian-vector product on one batch of 128, modes interleaved in one process (median and minimum
    over repetitions): forward-over-reverse (the default), reverse-over-forward, double backward, and double backward
    with the gradient graph cached. Goal: forward-over-reverse ≥ 1.3× faster than double backward.
(b) Matvecs until the λ_max estimate is within 1e-4 (relative) of a reference from a long, separately seeded Lanczos
    run; Lanczos and power iteration start from the same vector. Goal: Lanczos ≥ 3× fewer.
Models: MNIST-shaped MLP 784-300-100-10 and CIFAR ResNet-18 with 16 filters (eval-mode BatchNorm), random weights,
random inputs and labels. The machine may be shared: the load average is printed with the results.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from samscale.hessian import HessianOperator, lanczos, power_iteration

ACCURACY = 1e-4
MODES = ("fwd_rev", "rev_fwd", "double_backward", "double_backward+cache")


def build_models() -> dict[str, tuple[nn.Module, tuple[int, ...], int, int]]:
    """name → (model, input shape, timing repetitions, power-iteration matvec cap)."""
    try:
        from samscale.models import mlp, resnet18

        mnist_mlp, cifar_resnet = mlp((300, 100)), resnet18(filters=16)
    except ImportError:  # a checkout without samscale.models: plain equivalents
        mnist_mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
        )
        cifar_resnet = _resnet18(16)
    return {
        "MLP 784-300-100-10": (mnist_mlp, (1, 28, 28), 30, 1000),
        "ResNet-18 nf=16": (cifar_resnet.eval(), (3, 32, 32), 3, 60),
    }


def _resnet18(nf: int) -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> nn.Module:
        class Basic(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = nn.Sequential(
                    nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                )
                self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.relu(self.body(x) + self.skip(x))

        return Basic()

    layers: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU()]
    cin = nf
    for stage, width in enumerate((nf, 2 * nf, 4 * nf, 8 * nf)):
        layers += [block(cin, width, 1 if stage == 0 else 2), block(width, width, 1)]
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))


def time_modes(model: nn.Module, batch, repetitions: int) -> dict[str, list[float]]:
    """Seconds per product for every mode, interleaved round by round after one warm-up product each."""
    operators = {
        mode: HessianOperator(
            model, F.cross_entropy, batch, hvp_mode=mode.split("+")[0], cache=mode.endswith("+cache")
        )
        for mode in MODES
    }
    vector = torch.randn(operators["fwd_rev"].size, generator=torch.Generator().manual_seed(1))
    products = {mode: op.matvec(vector) for mode, op in operators.items()}  # warm-up; builds the cache
    reference = products["double_backward"]
    for mode, product in products.items():
        error = float((product - reference).norm() / reference.norm())
        if error > 1e-4:
            raise AssertionError(f"{mode} disagrees with double backward (relative error {error:.1e})")
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(repetitions):
        for mode, op in operators.items():
            started = time.perf_counter()
            op.matvec(vector)
            times[mode].append(time.perf_counter() - started)
    return times


def matvecs_to_accuracy(history: tuple[float, ...], reference: float) -> int | None:
    """1-based index of the first estimate within ACCURACY (relative) of the reference, or None."""
    for index, estimate in enumerate(history, start=1):
        if abs(estimate - reference) <= ACCURACY * abs(reference):
            return index
    return None


def count_matvecs(model: nn.Module, batch, power_cap: int) -> tuple[float, int, int | None, int | None]:
    """(reference λ_max, its matvecs, Lanczos matvecs to ACCURACY, power-iteration matvecs to ACCURACY or None)."""
    op = HessianOperator(model, F.cross_entropy, batch, hvp_mode="double_backward", cache=True)
    reference = lanczos(op, k=1, tol=1e-9, max_iter=150, generator=torch.Generator().manual_seed(100))
    top = float(reference.eigenvalues[0])
    start = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    fast = lanczos(op, k=1, tol=1e-6, max_iter=150, v0=start)
    return top, reference.n_matvec, matvecs_to_accuracy(fast.history, top), power_matvecs(op, start, top, power_cap)


def power_matvecs(op: HessianOperator, start: torch.Tensor, top: float, cap: int, chunk: int = 10) -> int | None:
    """Power-iteration steps until ACCURACY, run in chunks that each resume from the previous chunk's last vector
    (its first estimate repeats the previous one and is not counted), so the run can stop once ACCURACY is reached."""
    history: list[float] = []
    vector = start
    while len(history) < cap:
        result = power_iteration(op, tol=0.0, max_iter=chunk + (1 if history else 0), v0=vector)
        history.extend(result.history[1:] if history else result.history)
        vector = result.eigenvectors[:, 0]
        reached = matvecs_to_accuracy(tuple(history), top)
        if reached is not None:
            return reached if reached <= cap else None
    return None


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    began = time.perf_counter()
    print(f"threads: {torch.get_num_threads()}   load average at start: {os.getloadavg()[0]:.2f}")
    rows_a, rows_b = [], []
    for name, (model, shape, repetitions, power_cap) in build_models().items():
        g = torch.Generator().manual_seed(0)
        batch = (torch.rand(128, *shape, generator=g), torch.randint(0, 10, (128,), generator=g))
        times = time_modes(model, batch, repetitions)
        medians = {mode: statistics.median(t) for mode, t in times.items()}
        minima = {mode: min(t) for mode, t in times.items()}
        for mode in MODES:
            rows_a.append((name, mode, medians[mode] * 1e3, minima[mode] * 1e3, medians["double_backward"] / medians[mode]))
        rows_b.append((name, *count_matvecs(model, batch, power_cap), power_cap))

    print(f"\n(a) seconds per HVP, batch 128 (goal: fwd_rev ≥ 1.3× faster than double_backward)")
    print(f"{'model':<20} {'mode':<22} {'median ms':>10} {'min ms':>10} {'double_backward / mode':>24}")
    for name, mode, median, minimum, ratio in rows_a:
        print(f"{name:<20} {mode:<22} {median:>10.1f} {minimum:>10.1f} {ratio:>23.2f}×")
    print(f"\n(b) matvecs to {ACCURACY:g} relative accuracy on λ_max (goal: Lanczos ≥ 3× fewer than power iteration)")
    print(f"{'model':<20} {'λ_max':>10} {'ref matvecs':>12} {'Lanczos':>8} {'power':>8} {'power / Lanczos':>16}")
    for name, top, reference_matvecs, fast, slow, cap in rows_b:
        slow_text = str(slow) if slow is not None else f">{cap}"
        ratio = (slow if slow is not None else cap) / fast if fast else float("nan")
        ratio_text = f"{'≥' if slow is None else ''}{ratio:.1f}×"
        print(f"{name:<20} {top:>10.4f} {reference_matvecs:>12} {fast:>8} {slow_text:>8} {ratio_text:>16}")
    print(f"\ntotal {time.perf_counter() - began:.0f} s   load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
