"""Training-step time of SAM vs SGD, measured side by side, and SAM's own overhead (ascent + restore).

For each model both steps run interleaved in one process on the same batch (medians over repetitions). SAM's
overhead is first_step + restore, timed on their own with the clean gradient in place, as a share of the SAM step.
(first_step writes w + ε into a spare buffer and swaps storages; restore swaps back, so it copies nothing.)
The peer is the SAM most PyTorch users copy (the `SAM` optimizer of github.com/davda54/sam): its ascent clones every
parameter, then adds ε = ρ g/‖g‖ in place, and its second step copies the clones back; `PeerSAM` below is that
algorithm, written here from its description, timed the same way (step, and ascent + restore).
Goals: SAM/SGD ≤ 2.0 (two forward/backward passes) and overhead ≤ 3% of the SAM step.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from samscale.models import mlp, resnet18
from samscale.optim import SAM, sam_update

BUDGET_S = 25.0  # per model, warm-up included; repetitions stop once it is spent
MIN_REPETITIONS, MAX_REPETITIONS, WARMUP = 3, 50, 1


class Timing(NamedTuple):
    """Median seconds per SGD step, per SAM step and per SAM ascent + restore (samscale's and the peer's), over
    `repetitions` rounds."""

    sgd_s: float
    sam_s: float
    ascent_restore_s: float
    peer_s: float
    peer_ascent_restore_s: float
    repetitions: int


class PeerSAM:
    """The widely copied PyTorch SAM's algorithm: save a clone of w, add ε in place, later copy w back, then step
    the base optimizer (SGD with the same hyperparameters)."""

    def __init__(self, params, rho: float, **hyper) -> None:
        self.params = [p for p in params]
        self.rho = rho
        self.base = torch.optim.SGD(self.params, **hyper)
        self.saved: list[torch.Tensor] = []

    @torch.no_grad()
    def first_step(self) -> None:
        norm = torch.norm(torch.stack([p.grad.norm(p=2) for p in self.params if p.grad is not None]), p=2)
        scale = self.rho / (norm + 1e-12)
        self.saved = [p.data.clone() for p in self.params]
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad * scale)

    @torch.no_grad()
    def restore(self) -> None:
        for p, saved in zip(self.params, self.saved):
            p.data = saved

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.base.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        self.first_step()
        self.base.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        self.restore()
        self.base.step()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def ascent_and_restore(opt: SAM | PeerSAM, calls: int = 5) -> float:
    """Median seconds of first_step + restore over a few back-to-back calls (they are short)."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        opt.first_step()
        opt.restore()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def compare(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Timing:
    """Time SGD and SAM steps (and SAM's ascent + restore) on copies of one model, interleaved round by round."""
    hyper = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    sgd_model, sam_model, peer_model = model, copy.deepcopy(model), copy.deepcopy(model)
    sgd = torch.optim.SGD(sgd_model.parameters(), **hyper)
    sam = SAM(sam_model.parameters(), torch.optim.SGD, rho=0.05, **hyper)
    peer = PeerSAM(peer_model.parameters(), rho=0.05, **hyper)
    probe_model, peer_probe_model = copy.deepcopy(model), copy.deepcopy(model)
    probe = SAM(probe_model.parameters(), torch.optim.SGD, rho=0.05, **hyper)
    peer_probe = PeerSAM(peer_probe_model.parameters(), rho=0.05, **hyper)
    for probe_net in (probe_model, peer_probe_model):  # a clean gradient for the overhead probes
        F.cross_entropy(probe_net(x), y).backward()
    times: dict[str, list[float]] = {"sgd": [], "sam": [], "overhead": [], "peer": [], "peer_overhead": []}
    started = time.perf_counter()
    for rep in range(WARMUP + MAX_REPETITIONS):
        if rep >= WARMUP + MIN_REPETITIONS and time.perf_counter() - started > BUDGET_S:
            break
        sample = {
            "sgd": timed(lambda: sgd_step(sgd_model, sgd, x, y)),
            "sam": timed(lambda: sam_update(sam_model, F.cross_entropy, x, y, sam)),
            "overhead": ascent_and_restore(probe),
            "peer": timed(lambda: peer.step(peer_model, x, y)),
            "peer_overhead": ascent_and_restore(peer_probe),
        }
        if rep >= WARMUP:
            for key, value in sample.items():
                times[key].append(value)
    keys = ("sgd", "sam", "overhead", "peer", "peer_overhead")
    return Timing(*(statistics.median(times[k]) for k in keys), len(times["sam"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--models", default="mlp,resnet18", help="comma-separated subset of: mlp, resnet18")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wanted = args.models.split(",")
    unknown = sorted(set(wanted) - {"mlp", "resnet18"})
    if unknown:
        parser.error(f"unknown model(s) {unknown}; valid: mlp, resnet18")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("mlp", mlp((300, 100), in_features=784, num_classes=10), torch.rand(128, 784, generator=gen)),
        ("resnet18", resnet18(filters=16, num_classes=10), torch.randn(128, 3, 32, 32, generator=gen)),
    ]
    cases = [case for case in cases if case[0] in wanted]
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128, median of interleaved steps "
        f"(1-min load average {load:.1f} on {os.cpu_count()} CPUs: small ops slow down sharply when it exceeds them)"
    )
    print(f"{'model':<10}{'params':>10}{'reps':>6}{'SGD ms':>9}{'SAM ms':>9}{'SAM/SGD':>9}", end="")
    print(f"{'ascent+restore ms':>19}{'share':>8}{'peer SAM ms':>13}{'peer/ours':>11}{'peer ascent+restore':>21}"
          f"{'share':>8}")
    for name, model, x in cases:
        model.train()
        y = torch.randint(0, 10, (128,), generator=gen)
        t = compare(model, x, y)
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{name:<10}{n_params:>10,}{t.repetitions:>6}{1e3 * t.sgd_s:>9.2f}{1e3 * t.sam_s:>9.2f}"
            f"{t.sam_s / t.sgd_s:>9.2f}{1e3 * t.ascent_restore_s:>19.3f}{t.ascent_restore_s / t.sam_s:>8.1%}"
            f"{1e3 * t.peer_s:>13.2f}{t.peer_s / t.sam_s:>11.2f}{1e3 * t.peer_ascent_restore_s:>21.3f}"
            f"{t.peer_ascent_restore_s / t.peer_s:>8.1%}"
        )


if __name__ == "__main__":
    main()
