"""Hessian toolkit benchmark: HVP cost by differentiation mode, and matvecs Lanczos vs power iteration need for λ_max.

(a) Seconds per Hessian-vector product on one batch of 128, modes interleaved in one process (median and minimum
    over repetitions): forward-over-reverse (the default), reverse-over-forward, double backward, double backward
    with the gradient graph cached, and — with --compile — forward-over-reverse through torch.compile (an experiment;
    its compilation time is printed). Goal: forward-over-reverse ≥ 1.3× faster than double backward.
(b) Matvecs until the λ_max estimate is within 1e-4 (relative) of a reference from a long, separately seeded Lanczos
    run; Lanczos and power iteration start from the same vectors (several for the MLP, one for the ResNet, whose power
    iteration is capped). Goal: Lanczos ≥ 3× fewer.
Models: MNIST-shaped MLP 784-300-100-10 (random weights, and after 200 full-batch gradient steps on its random batch,
near interpolation) and CIFAR ResNet-18 with 16 filters (random weights, eval-mode BatchNorm); random inputs and
labels. The machine may be shared: load averages are printed with the results.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from samscale.hessian import HessianOperator, Objective, lanczos, power_iteration
from samscale.hessian.objective import evaluation_mode, forward_over_reverse

ACCURACY = 1e-4
BATCH = 128


def mnist_mlp() -> nn.Module:
    try:
        from samscale.models import mlp

        return mlp((300, 100), generator=torch.Generator().manual_seed(0))
    except ImportError:  # a checkout without samscale.models: the same architecture, PyTorch's default init
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
        )


def cifar_resnet18() -> nn.Module:
    try:
        from samscale.models import resnet18

        return resnet18(filters=16, generator=torch.Generator().manual_seed(0)).eval()
    except ImportError:
        return _plain_resnet18(16).eval()


def _plain_resnet18(nf: int) -> nn.Module:
    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            )
            projection = stride != 1 or cin != cout
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if projection
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU()]
    cin = nf
    for stage, width in enumerate((nf, 2 * nf, 4 * nf, 8 * nf)):
        layers += [Basic(cin, width, 1 if stage == 0 else 2), Basic(width, width, 1)]
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))


def random_batch(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(BATCH, *shape, generator=g), torch.randint(0, 10, (BATCH,), generator=g)


def trained(model: nn.Module, batch, steps: int = 200, lr: float = 0.1) -> tuple[nn.Module, float]:
    """The model after `steps` full-batch gradient steps on `batch`, and its final loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        optimizer.step()
    with torch.no_grad():
        return model, float(F.cross_entropy(model(batch[0]), batch[1]))


class CompiledForwardOverReverse:
    """Forward-over-reverse HVP on one batch through torch.compile: an experiment, not a library mode (compiling the
    ResNet takes minutes on this CPU, and its float32 products came out ~50× less accurate than eager ones)."""

    def __init__(self, model: nn.Module, batch) -> None:
        self.objective = Objective(model, F.cross_entropy, batch)
        self.size = self.objective.size
        (x, y), = self.objective.batches
        loss = lambda p: self.objective.batch_loss(p, x, y)  # noqa: E731
        self.product = torch.compile(lambda params, tangent: forward_over_reverse(loss, params, tangent))
        # separate tensors, not views of one flat vector: compiled forward-mode AD asserts on views
        self.params = {n: t.clone() for n, t in self.objective.unflatten(self.objective.point).items()}

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        tangent = {n: t.clone() for n, t in self.objective.unflatten(vector).items()}
        with evaluation_mode(self.objective.model, "eval"):
            return self.objective.flatten(self.product(self.params, tangent))


def operators(model: nn.Module, batch, compile_fwd_rev: bool) -> dict:
    modes = {
        "fwd_rev": {},
        "rev_fwd": {"hvp_mode": "rev_fwd"},
        "double_backward": {"hvp_mode": "double_backward"},
        "double_backward+cache": {"hvp_mode": "double_backward", "cache": True},
    }
    ops: dict = {name: HessianOperator(model, F.cross_entropy, batch, **options) for name, options in modes.items()}
    if compile_fwd_rev:
        ops["fwd_rev+compile"] = CompiledForwardOverReverse(model, batch)
    return ops


def time_modes(model: nn.Module, batch, repetitions: int, compile_fwd_rev: bool):
    """Seconds per product for every mode, interleaved round by round after one warm-up product each (which builds
    the cache or compiles); also the warm-up seconds and each mode's relative difference from double backward."""
    ops = operators(model, batch, compile_fwd_rev)
    vector = torch.randn(ops["fwd_rev"].size, generator=torch.Generator().manual_seed(2))
    warmup, products = {}, {}
    for name, op in ops.items():
        started = time.perf_counter()
        products[name] = op.matvec(vector)
        warmup[name] = time.perf_counter() - started
    reference = products["double_backward"]
    errors = {name: float((p - reference).norm() / reference.norm()) for name, p in products.items()}
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repetitions):
        for name, op in ops.items():
            started = time.perf_counter()
            op.matvec(vector)
            times[name].append(time.perf_counter() - started)
    return times, warmup, errors


def matvecs_to_accuracy(history: tuple[float, ...] | list[float], reference: float) -> int | None:
    """1-based index of the first estimate within ACCURACY (relative) of the reference, or None."""
    for index, estimate in enumerate(history, start=1):
        if abs(estimate - reference) <= ACCURACY * abs(reference):
            return index
    return None


def power_matvecs(op: HessianOperator, start: torch.Tensor, reference: float, cap: int, chunk: int = 10) -> int | None:
    """Power-iteration steps until ACCURACY (None if more than `cap`). Runs in chunks so it can stop early; each
    chunk resumes from the previous chunk's last vector, so its first estimate repeats and is not counted."""
    history: list[float] = []
    vector = start
    while len(history) < cap:
        result = power_iteration(op, tol=0.0, max_iter=chunk + (1 if history else 0), v0=vector)
        history.extend(result.history[1:] if history else result.history)
        vector = result.eigenvectors[:, 0]
        reached = matvecs_to_accuracy(history, reference)
        if reached is not None:
            return reached if reached <= cap else None
    return None


def count_matvecs(model: nn.Module, batch, n_starts: int, power_cap: int):
    """(reference λ_max, reference matvecs, Lanczos matvecs per start, power matvecs per start (None = over cap))."""
    op = HessianOperator(model, F.cross_entropy, batch, hvp_mode="double_backward", cache=True)
    reference = lanczos(op, k=1, tol=1e-9, max_iter=150, generator=torch.Generator().manual_seed(100))
    top = float(reference.eigenvalues[0])
    fast, slow = [], []
    for seed in range(n_starts):
        start = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        fast.append(matvecs_to_accuracy(lanczos(op, k=1, tol=1e-6, max_iter=150, v0=start).history, top))
        slow.append(power_matvecs(op, start, top, power_cap))
    return top, reference.n_matvec, fast, slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd forward-over-reverse")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--skip-counts", action="store_true", help="time the HVP modes only, skip part (b)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    began = time.perf_counter()
    print(f"threads: {torch.get_num_threads()}   load average at start: {os.getloadavg()[0]:.2f}", flush=True)

    mlp_batch, resnet_batch = random_batch((1, 28, 28)), random_batch((3, 32, 32))
    mlp_model, resnet_model = mnist_mlp(), cifar_resnet18()
    timing_rows = []
    for name, model, batch, repetitions in [
        ("MLP 784-300-100-10", mlp_model, mlp_batch, 30),
        ("ResNet-18 nf=16", resnet_model, resnet_batch, 3),
    ]:
        times, warmup, errors = time_modes(model, batch, repetitions, args.compile)
        baseline = times["double_backward"]
        for mode, values in times.items():
            median, minimum = statistics.median(values), min(values)
            speed = (statistics.median(baseline) / median, min(baseline) / minimum)
            timing_rows.append((name, mode, median, minimum, speed, warmup[mode], errors[mode]))

    count_rows = []
    if not args.skip_counts:
        mlp_trained, mlp_loss = trained(mnist_mlp(), mlp_batch)
        for name, model, batch, starts, cap in [
            ("MLP, random weights", mlp_model, mlp_batch, 5, 1000),
            (f"MLP, trained (loss {mlp_loss:.3f})", mlp_trained, mlp_batch, 5, 1000),
            ("ResNet-18 nf=16, random", resnet_model, resnet_batch, 1, 60),
        ]:
            count_rows.append((name, cap, *count_matvecs(model, batch, starts, cap)))

    print(f"\n(a) time per HVP, batch {BATCH} (goal: fwd_rev ≥ 1.3× faster than double_backward)")
    print("speed = double_backward time / mode time, from medians and from minima (minima suffer least from load)")
    print("first s = the first product (builds the cache / compiles); rel. diff = ‖Hv − Hv_double_backward‖/‖Hv‖")
    header = ("model", "mode", "median ms", "min ms", "speed (med)", "speed (min)", "first s", "rel. diff")
    print("{:<20} {:<22} {:>10} {:>10} {:>12} {:>12} {:>8} {:>10}".format(*header))
    for name, mode, median, minimum, (by_median, by_min), first, error in timing_rows:
        print(
            f"{name:<20} {mode:<22} {median * 1e3:>10.1f} {minimum * 1e3:>10.1f} {by_median:>11.2f}× {by_min:>11.2f}× "
            f"{first:>8.1f} {error:>10.1e}"
        )
    print(f"\n(b) matvecs to {ACCURACY:g} relative accuracy on λ_max (goal: Lanczos ≥ 3× fewer than power iteration)")
    print(f"{'model':<28} {'λ_max':>9} {'ref':>4} {'Lanczos (per start)':>22} {'power (per start)':>24} {'ratio':>7}")
    for name, cap, top, reference_matvecs, fast, slow in count_rows:
        slow_counts = [cap if s is None else s for s in slow]
        ratio = statistics.mean(slow_counts) / statistics.mean(fast)
        slow_text = " ".join(f">{cap}" if s is None else str(s) for s in slow)
        bound = "≥" if None in slow else ""
        print(
            f"{name:<28} {top:>9.4f} {reference_matvecs:>4} {' '.join(map(str, fast)):>22} {slow_text:>24} "
            f"{bound}{ratio:>5.1f}×"
        )
    print(f"\ntotal {time.perf_counter() - began:.0f} s   load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
