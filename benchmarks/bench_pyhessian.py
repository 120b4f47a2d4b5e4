"""samscale.hessian against PyHessian (Yao et al., 2020; the `pyhessian` package, extra `bench`): same model, same
batch, same quantities — top-3 eigenvalues, trace, spectral density — timed side by side, each with its accuracy.

Accuracy is the relative error against a converged reference computed in the same run: the top eigenvalues from
a Lanczos run to residual 1e-10; the trace from a long deflated Hutchinson run (40 Lanczos steps, then 300 probes on
the MLP and 60 on the ResNet; its standard error is printed, and errors below it are not resolved);
the density (MLP only) as the L1 distance to a 4-probe, 100-step SLQ density, both smoothed alike. Stochastic
estimates are repeated over seeds and their mean absolute errors and mean times reported.
Settings: PyHessian's defaults (power iteration with deflation, maxIter=100, tol=1e-3; Hutchinson maxIter=100,
tol=1e-3; SLQ iter=100, n_v=1); samscale: Lanczos k=3 to a relative residual of 1e-2 (an eigenvalue error of
about the residual squared over the spectral gap: far below PyHessian's at its tol=1e-3, as the error columns
show); Hutchinson with 10 Lanczos steps of deflation and 10 probes, and with 6 + 6 (about PyHessian's accuracy on the MLP); SLQ 1 probe × 100 steps; its default HVP
(double backward through the cached gradient graph). The trace is stochastic on both sides: its errors and times
are means over seeds (10 on the MLP, 3 on the ResNet).
PyHessian 0.1 calls torch.eig, removed from torch 2; the benchmark supplies it from torch.linalg.eigh (T is
symmetric, so the two agree). Models: MLP 784-128-64-10 after 100 full-batch gradient steps on 1024 random
MNIST-shaped examples; CIFAR ResNet-18 with 8 filters after 60 full-batch SGD steps on 128 random CIFAR-shaped
examples, BatchNorm in eval mode.
Hessian-vector products are counted on both sides (a measure of work the machine's load does not distort).
Goal: samscale ≥ 3× faster at equal or better accuracy. The machine may be shared: load averages are printed.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from samscale.hessian import HessianOperator, hutchinson_trace, lanczos, spectral_density
from samscale.hessian.density import SpectralDensity

TOP = 3
LANCZOS_TOL = 1e-2  # relative Ritz residual; the eigenvalue error is about its square over the gap
# PyHessian's power iteration with deflation finds the eigenvalues of largest magnitude, so both sides (and the
# reference) compute those: which="LM" (a random-weight network's may be negative).
RESNET_STEPS = 60  # full-batch SGD steps before the ResNet is measured, as the MLP is (random weights put
# eigenvalues of both signs and near-equal magnitude at the top, which no top-3 method resolves in few products)
TRACE_SETTINGS = ((10, 10), (6, 6))  # samscale's trace: (Lanczos steps of deflation, projected probes); the first is
# the default of this benchmark, the second the cheapest whose mean error on the MLP is still below PyHessian's


def _eig(matrix: torch.Tensor, eigenvectors: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.eig(T, eigenvectors=True) as PyHessian 0.1 uses it, for symmetric T: ([real, imag] values, vectors)."""
    values, vectors = torch.linalg.eigh(matrix)
    return torch.stack([values, torch.zeros_like(values)], dim=1), vectors


class Counter:
    """Counts Hessian-vector products: a load-independent measure of work beside the wall time."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, fn):
        def counted(*args, **kwargs):
            self.count += 1
            return fn(*args, **kwargs)

        return counted


PEER_HVPS = Counter()


def pyhessian_class():
    """PyHessian's `hessian` class, or None when the package is not installed (pip install -e '.[bench]')."""
    try:
        module = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports its class)
    except ImportError:
        return None
    torch.eig = _eig  # torch 2 keeps only a stub of it that raises
    if not hasattr(module, "_counted"):
        module.hessian_vector_product = PEER_HVPS.wrap(module.hessian_vector_product)
        module._counted = True
    return module.hessian


def models(quick: bool) -> list[tuple[str, nn.Module, tuple[torch.Tensor, torch.Tensor]]]:
    from samscale.models import mlp, resnet18

    g = torch.Generator().manual_seed(1)
    n_mlp = 256 if quick else 1024
    x, y = torch.rand(n_mlp, 1, 28, 28, generator=g), torch.randint(0, 10, (n_mlp,), generator=g)
    net = mlp((128, 64), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    out = [(f"MLP 784-128-64-10, n={n_mlp}", net.eval(), (x, y))]
    if not quick:
        xr, yr = torch.rand(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
        resnet = resnet18(filters=8, generator=torch.Generator().manual_seed(0))
        optimizer = torch.optim.SGD(resnet.parameters(), lr=0.05, momentum=0.9)
        for _ in range(RESNET_STEPS):  # BatchNorm in train mode here; its running statistics follow
            optimizer.zero_grad()
            F.cross_entropy(resnet(xr), yr).backward()
            optimizer.step()
        out.append(("ResNet-18 nf=8, n=128, trained", resnet.eval(), (xr, yr)))
    return out


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def relative(estimate: float, reference: float) -> float:
    return abs(estimate - reference) / abs(reference)


class Peer:
    """PyHessian on a private copy of the model (it leaves gradients with graphs on the model it is given)."""

    def __init__(self, cls, model: nn.Module, batch) -> None:
        self.cls, self.model, self.batch = cls, model, batch

    def __call__(self, seed: int):
        torch.manual_seed(seed)
        return self.cls(copy.deepcopy(self.model), nn.CrossEntropyLoss(), data=self.batch, cuda=False)


def smoothed(nodes: list[torch.Tensor], weights: list[torch.Tensor], grid: torch.Tensor, sigma: float) -> torch.Tensor:
    theta = torch.cat([torch.as_tensor(n, dtype=torch.float64).reshape(-1) for n in nodes])
    tau = torch.cat([torch.as_tensor(w, dtype=torch.float64).reshape(-1) for w in weights]) / len(nodes)
    kernel = torch.exp(-0.5 * ((grid[:, None] - theta[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = kernel @ tau
    return density / torch.trapezoid(density, grid)


def compare(name: str, model: nn.Module, batch, peer_cls, seeds: int, with_density: bool) -> list[tuple]:
    """Rows (model, quantity, peer s, ours s, ratio, peer error, ours error, note) for one model."""
    ours_hvps = Counter()

    def op() -> HessianOperator:
        fresh = HessianOperator(model, F.cross_entropy, batch)
        fresh.matvec = ours_hvps.wrap(fresh.matvec)
        return fresh

    reference_op = HessianOperator(model, F.cross_entropy, batch)
    reference = lanczos(reference_op, k=TOP, tol=1e-10, max_iter=200, which="LM",
                        generator=torch.Generator().manual_seed(99))
    top_ref = reference.eigenvalues.tolist()
    reference_probes = 300 if with_density else 60  # the MLP's products are cheap, the ResNet's are not
    trace_ref = hutchinson_trace(reference_op, reference_probes, deflate=40,
                                 generator=torch.Generator().manual_seed(98))
    peer = Peer(peer_cls, model, batch) if peer_cls else None
    rows = []

    # top-3 eigenvalues
    ours, ours_s = timed(lambda: lanczos(op(), k=TOP, tol=LANCZOS_TOL, which="LM",
                                         generator=torch.Generator().manual_seed(0)))
    ours_err = max(relative(v, r) for v, r in zip(ours.eigenvalues.tolist(), top_ref))
    note = f"HVPs: ours {ours.n_matvec}"
    if peer:
        PEER_HVPS.count = 0
        (theirs, _), peer_s = timed(lambda: peer(0).eigenvalues(top_n=TOP))
        peer_err = max(relative(v, r) for v, r in zip(sorted(theirs, key=abs, reverse=True), top_ref))
        rows.append((name, f"top-{TOP} eigenvalues", peer_s, ours_s, peer_err, ours_err,
                     note + f", PyHessian {PEER_HVPS.count}"))
    else:
        rows.append((name, f"top-{TOP} eigenvalues", None, ours_s, None, ours_err, note))

    # trace, over seeds: PyHessian once per seed, samscale at each setting of TRACE_SETTINGS
    n_seeds = seeds if with_density else min(seeds, 3)
    peer_t, peer_e, probes = [], [], []
    if peer:
        for seed in range(n_seeds):
            values, seconds = timed(lambda: peer(seed).trace())
            peer_t.append(seconds)
            peer_e.append(relative(statistics.mean(values), trace_ref.estimate))
            probes.append(len(values))
    for deflate, n_probes in TRACE_SETTINGS:
        ours_t, ours_e = [], []
        for seed in range(n_seeds):
            estimate, seconds = timed(lambda: hutchinson_trace(op(), n_probes, deflate=deflate,
                                                               generator=torch.Generator().manual_seed(seed)))
            ours_t.append(seconds)
            ours_e.append(relative(estimate.estimate, trace_ref.estimate))
        note = f"HVPs: ours {deflate} + {n_probes}"
        if peer:
            note += f", PyHessian {statistics.mean(probes):.0f} (mean)"
        note += f"; reference ± {trace_ref.standard_error / abs(trace_ref.estimate):.1%}"
        rows.append((name, f"trace ({n_seeds} seeds), ours {deflate}+{n_probes}",
                     statistics.mean(peer_t) if peer else None, statistics.mean(ours_t),
                     statistics.mean(peer_e) if peer else None, statistics.mean(ours_e), note))

    # density
    if with_density:
        full = spectral_density(reference_op, n_runs=4, n_steps=100, generator=torch.Generator().manual_seed(97))
        grid = full.grid
        sigma = 0.01 * float(grid[-1] - grid[0])
        exact = smoothed(full.nodes, full.weights, grid, sigma)
        l1 = lambda d: float(torch.trapezoid((d - exact).abs(), grid))  # noqa: E731
        mine, ours_s = timed(
            lambda: spectral_density(op(), n_runs=1, n_steps=100, generator=torch.Generator().manual_seed(0))
        )
        ours_err = l1(smoothed(mine.nodes, mine.weights, grid, sigma))
        if peer:
            (nodes, weights), peer_s = timed(lambda: peer(0).density(iter=100, n_v=1))
            peer_err = l1(smoothed(nodes, weights, grid, sigma))
            rows.append((name, "density (L1 distance)", peer_s, ours_s, peer_err, ours_err, "1 probe, 100 steps each"))
        else:
            rows.append((name, "density (L1 distance)", None, ours_s, None, ours_err, "1 probe, 100 steps"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seeds", type=int, default=10,
                        help="repetitions of the stochastic trace (default 10; at most 3 on the ResNet)")
    parser.add_argument("--quick", action="store_true", help="MLP on 256 examples only (a smoke check)")
    args, _ = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    print(f"threads: {torch.get_num_threads()}   load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    peer_cls = pyhessian_class()
    if peer_cls is None:
        print("PyHessian is not installed (pip install -e '.[bench]'): samscale's side only")
    rows = []
    for index, (name, model, batch) in enumerate(models(args.quick)):
        rows += compare(name, model, batch, peer_cls, args.seeds, with_density=index == 0)
        print_table(rows)
    print(f"\ntotal {time.perf_counter() - began:.0f} s   load average at end: {os.getloadavg()[0]:.2f}")


def print_table(rows: list[tuple]) -> None:
    print("\nspeed = PyHessian seconds / samscale seconds (goal ≥ 3×); error = relative error vs the reference")
    header = ("model", "quantity", "PyHessian s", "samscale s", "speed", "PyH. error", "ours error", "note")
    print("{:<28} {:<30} {:>11} {:>10} {:>7} {:>10} {:>10}  {}".format(*header))
    for name, quantity, peer_s, ours_s, peer_err, ours_err, note in rows:
        peer_text = "-" if peer_s is None else f"{peer_s:.2f}"
        speed = "-" if peer_s is None else f"{peer_s / ours_s:.1f}×"
        peer_err_text = "-" if peer_err is None else f"{peer_err:.1e}"
        print(f"{name:<28} {quantity:<30} {peer_text:>11} {ours_s:>10.2f} {speed:>7} {peer_err_text:>10} "
              f"{ours_err:>10.1e}  {note}", flush=True)


if __name__ == "__main__":
    main()
