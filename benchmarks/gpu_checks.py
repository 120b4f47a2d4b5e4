"""The Python half of benchmarks/gpu.sh: timings and smoke checks that only mean something on a CUDA device.

Sections (each fails alone; a failure is recorded and the others still run):
  sam_sgd      SAM / SGD training-step time on CUDA (ResNet-18 nf=64, batch 128; MLP 784-300-100-10, batch 128).
  pipeline     one CIFAR ResNet-18 epoch with the resident pipeline (the data on the device, samscale's TensorLoader
               gathering batches and PadCropFlip augmenting them there) vs a torch DataLoader pipeline (CPU tensors,
               per-example augmentation in 4 workers, pinned memory, a copy per batch). On the CIFAR-10 stand-in
               when its data are here, else on random tensors of the same shape (speed does not depend on pixels).
  precision    bf16 autocast, channels-last and torch.compile: each one's ResNet step runs, its loss is finite and
               close to fp32's (same batch, same weights).
  projection   the mnist-mlp recipe's `paper` budget: every distinct (width, optimizer) trained for 2 epochs on
               55k MNIST-shaped examples (random when MNIST is not here); the second epoch's time × the epochs and
               runs of the budget = the projected GPU time of the whole study (evaluations not included).
  hessian      samscale.hessian on CUDA: the auto HVP mode's product against the CPU float64 product, and its time.
--cpu-dry-run runs every section on the CPU at toy sizes (a check of this script, not a measurement).
Writes gpu_results.json and gpu_results.md into --out (default: $OUT when set, else the current folder).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from samscale.data.augment import PadCropFlip
from samscale.data.loader import TensorLoader
from samscale.data.split import Split
from samscale.models import build_model, mlp, resnet18
from samscale.optim import SAM, sam_update


class Sizes:
    """Problem sizes: the real ones on CUDA, toy ones for --cpu-dry-run."""

    def __init__(self, dry: bool) -> None:
        self.filters = 2 if dry else 64
        self.cifar_n = 64 if dry else 50_000
        self.mnist_n = 256 if dry else 55_000
        self.batch = 16 if dry else 128
        self.repetitions = 1 if dry else 20
        self.widths = [0.25] if dry else None  # None: every width of the paper budget
        self.workers = 0 if dry else 4
        self.hessian_n = 16 if dry else 256


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


def step_fn(model: nn.Module, optimizer_name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One training step of SGD or SAM (ρ = 0.05), momentum 0.9, as the recipes train."""
    base = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
    if optimizer_name == "sam":
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, **base)
        return lambda x, y: sam_update(model, F.cross_entropy, x, y, opt)[0].detach()
    opt = torch.optim.SGD(model.parameters(), **base)
    return lambda x, y: sgd_step(model, opt, x, y)


def sam_sgd(device: torch.device, sizes: Sizes) -> dict:
    g = torch.Generator().manual_seed(0)
    cases = {
        f"ResNet-18 nf={sizes.filters}": (lambda: resnet18(filters=sizes.filters), (3, 32, 32)),
        "MLP 784-300-100-10": (lambda: mlp((300, 100)), (1, 28, 28)),
    }
    out = {}
    for name, (make, shape) in cases.items():
        x = torch.randn(sizes.batch, *shape, generator=g).to(device)
        y = torch.randint(0, 10, (sizes.batch,), generator=g).to(device)
        times = {}
        for optimizer_name in ("sgd", "sam"):
            torch.manual_seed(0)
            step = step_fn(make().to(device), optimizer_name)
            for _ in range(3):
                step(x, y)  # warm-up (cuDNN autotuning, allocator)
            times[optimizer_name] = timed(lambda: [step(x, y) for _ in range(sizes.repetitions)], device)
        out[name] = {f"{k}_ms": 1e3 * v / sizes.repetitions for k, v in times.items()}
        out[name]["sam_over_sgd"] = times["sam"] / times["sgd"]
    return out


def cifar_like(sizes: Sizes) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The CIFAR-10 stand-in's training images when available, else random tensors of the same shape."""
    try:
        from samscale.data import load_dataset

        train = load_dataset("cifar10-standin").train
        x, y = train.x[: sizes.cifar_n].contiguous(), train.y[: sizes.cifar_n]
        return x, y, "cifar10-standin"
    except Exception as error:  # noqa: BLE001 - any failure to load means: use random data of the same shape
        g = torch.Generator().manual_seed(0)
        x = torch.randn(sizes.cifar_n, 3, 32, 32, generator=g)
        return x, torch.randint(0, 10, (sizes.cifar_n,), generator=g), f"random ({type(error).__name__})"


class PerExampleAugment(torch.utils.data.Dataset):
    """The usual host pipeline: each example padded, cropped and flipped on its own (as torchvision would)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.augment = x, y, PadCropFlip(pad=4)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int):
        return self.augment(self.x[index : index + 1], torch.default_generator)[0], self.y[index]


def pipeline(device: torch.device, sizes: Sizes) -> dict:
    x, y, source = cifar_like(sizes)
    results: dict = {"data": source, "examples": len(y), "filters": sizes.filters}

    def epoch(batches) -> float:
        torch.manual_seed(0)
        step = step_fn(resnet18(filters=sizes.filters).to(device), "sgd")
        warm = [(x[: sizes.batch].to(device), y[: sizes.batch].to(device))]
        for xb, yb in warm * 2:
            step(xb, yb)

        def run() -> None:
            losses = [step(xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)) for xb, yb in batches()]
            results.setdefault("final_losses", []).append(float(losses[-1]))

        return timed(run, device)

    resident = Split(x.to(device), y.to(device))
    generator = torch.Generator().manual_seed(0)
    loader = TensorLoader(resident, sizes.batch, shuffle=True, generator=generator, augment=PadCropFlip(pad=4))
    results["resident_s"] = epoch(lambda: loader)
    host = torch.utils.data.DataLoader(
        PerExampleAugment(x, y), batch_size=sizes.batch, shuffle=True, num_workers=sizes.workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    results["dataloader_s"] = epoch(lambda: host)
    results["dataloader_over_resident"] = results["dataloader_s"] / results["resident_s"]
    return results


def precision(device: torch.device, sizes: Sizes) -> dict:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sizes.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (sizes.batch,), generator=g).to(device)
    torch.manual_seed(0)
    reference_model = resnet18(filters=sizes.filters).to(device)
    with torch.no_grad():
        reference = float(F.cross_entropy(reference_model(x), y))
    out: dict = {"fp32_loss": reference}
    variants = {
        "bf16_autocast": dict(bf16=True),
        "channels_last": dict(channels_last=True),
        "compile": dict(compile=True),
    }
    for name, options in variants.items():
        if name == "compile" and device.type == "cpu":  # minutes of inductor compilation, and crashes, on the CPU
            out[name] = {"skipped": "torch.compile of a ResNet is checked on CUDA only"}
            continue
        try:
            model = resnet18(filters=sizes.filters).to(device)
            model.load_state_dict(reference_model.state_dict())
            inputs = x
            if options.get("channels_last"):
                model = model.to(memory_format=torch.channels_last)
                inputs = x.contiguous(memory_format=torch.channels_last)
            forward = torch.compile(model) if options.get("compile") else model
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(options.get("bf16")))
            with torch.no_grad(), autocast:
                loss = float(F.cross_entropy(forward(inputs).float(), y))
            started = time.perf_counter()
            with autocast:
                step_loss = sgd_step(forward, opt, inputs, y)
            synchronize(device)
            out[name] = {
                "loss": loss, "relative_difference": abs(loss - reference) / abs(reference),
                "finite_after_step": math.isfinite(float(step_loss)), "first_step_s": time.perf_counter() - started,
            }
        except Exception as error:  # noqa: BLE001 - recorded, the other variants still run
            out[name] = {"error": f"{type(error).__name__}: {error}"}
    return out


def projection(device: torch.device, sizes: Sizes) -> dict:
    from samscale.recipes import get_recipe

    specs = get_recipe("mnist-mlp").study("paper").expand()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(sizes.mnist_n, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (sizes.mnist_n,), generator=g).to(device)
    loader = TensorLoader(Split(x, y), sizes.batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    widths = sorted({s.model.size for s in specs}) if sizes.widths is None else sizes.widths
    epoch_s = {}
    for width in widths:
        for name in ("sgd", "sam"):
            torch.manual_seed(0)
            model = build_model("mlp", width, input_shape=(1, 28, 28), num_classes=10).to(device)
            step = step_fn(model, name)
            seconds = [timed(lambda: [step(xb, yb) for xb, yb in loader], device) for _ in range(2)]
            epoch_s[f"{width}/{name}"] = seconds[-1] * 55_000 / sizes.mnist_n * sizes.batch / 128
    total = sum(
        spec.train.epochs * epoch_s.get(f"{spec.model.size}/{spec.optim.name}", math.nan) for spec in specs
    )
    return {"runs": len(specs), "epoch_s": epoch_s, "projected_hours": total / 3600,
            "note": "training steps only; per-epoch evaluations and checkpoints add to this"}


def hessian(device: torch.device, sizes: Sizes) -> dict:
    from samscale.hessian import HessianOperator

    g = torch.Generator().manual_seed(2)
    n = sizes.hessian_n
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    model = resnet18(filters=min(sizes.filters, 16)).eval()
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=g)
    exact = HessianOperator(model, F.cross_entropy, (x, y), dtype=torch.float64).matvec(v.double())
    op = HessianOperator(model.to(device), F.cross_entropy, (x, y))
    first = timed(lambda: op.matvec(v.to(device)), device)
    product = op.matvec(v.to(device))
    per_product = timed(lambda: [op.matvec(v.to(device)) for _ in range(5)], device) / 5
    error = float((product.double().cpu() - exact).norm() / exact.norm())
    return {"mode_used": op.mode_used, "first_product_s": first, "product_ms": 1e3 * per_product,
            "relative_error_vs_cpu_float64": error}


SECTIONS = {"sam_sgd": sam_sgd, "pipeline": pipeline, "precision": precision, "projection": projection,
            "hessian": hessian}


def markdown(results: dict) -> str:
    lines = ["# GPU checks", "", f"device: {results['device']}, torch {results['torch']}", ""]
    for name in SECTIONS:
        lines += [f"## {name}", "", "```", json.dumps(results.get(name), indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on the CPU: checks the script runs")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for gpu_results.json/.md")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run only these sections")
    args = parser.parse_args()
    if args.cpu_dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    else:
        parser.error("no CUDA device: run with --cpu-dry-run to check the script on the CPU")
    sizes = Sizes(dry=args.cpu_dry_run)
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
        "torch": torch.__version__, "dry_run": args.cpu_dry_run,
    }
    for name in args.only or list(SECTIONS):
        started = time.perf_counter()
        try:
            results[name] = SECTIONS[name](device, sizes)
        except Exception as error:  # noqa: BLE001 - one broken section must not hide the others
            results[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        results[name]["section_s"] = time.perf_counter() - started
        print(f"[{name}] {json.dumps(results[name], default=str)}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "gpu_results.md").write_text(markdown(results))
    failed = [name for name in args.only or SECTIONS if "error" in results[name]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
