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
  train_run    `train_run` of a ResNet-18 (SAM) under each precision policy: highest, tf32, bf16 and fp16 with its
               GradScaler; epoch time, final loss and what the run records (device, precision, torch version).
  checkpoint   a CUDA run stopped after one epoch and resumed from its checkpoint against the uninterrupted run.
  ensemble     8 MLP runs (SGD and SAM) packed into one batched model against the same runs one by one on CUDA:
               times and the largest difference of their final training losses.
  pool         a local pool with 2 runs sharing one GPU (CUDA_VISIBLE_DEVICES from samscale.sweep.gpus): what each
               worker sees, and two teacher-student runs trained through it.
  projection_ensemble  the mnist-mlp `paper` grid packed as the ensemble executor packs it on this GPU: one pack
               per width trained for 2 epochs; the second epoch's time × epochs × packs = the projected time.
--cpu-dry-run runs every section on the CPU at toy sizes (a check of this script, not a measurement).
Sections stop being started when less than their share of --budget-s seconds is left (recorded as skipped).
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
        self.run_n = 32 if dry else 4096  # training examples of the train_run / checkpoint sections
        self.pack_members = 2 if dry else 8
        self.projection_n = 128 if dry else 11_000  # examples per epoch of projection_ensemble (scaled to 55k)


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
    }
    for name, options in variants.items():
        if name == "channels_last" and device.type == "cpu":  # channels-last CPU convolutions crash (segfault)
            out[name] = {"skipped": "channels-last is checked on CUDA only"}
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


def random_images(shape: tuple[int, ...], n: int, classes: int = 10, augment: bool = True):
    """A dataset of `n` random images of `shape` (train), n/4 (val, test): speed and numerics do not need pixels."""
    from samscale.data import Dataset

    g = torch.Generator().manual_seed(0)
    splits = [Split(torch.randn(m, *shape, generator=g), torch.randint(0, classes, (m,), generator=g))
              for m in (n, max(n // 4, 8), max(n // 4, 8))]
    return Dataset(name="random", train=splits[0], val=splits[1], test=splits[2], task="classification",
                   num_classes=classes, output_dim=classes, input_shape=shape, source="random images",
                   train_augment=PadCropFlip(pad=4) if augment else None)


def _random_data(shape: tuple[int, ...], n: int, augment: bool = True):
    """Make every run of this process train on `random_images` (the dataset cache of samscale.train.loop)."""
    import samscale.train.loop as loop

    dataset = random_images(shape, n, augment=augment)
    loop.dataset_for = lambda spec: dataset


def _resnet_spec(sizes: Sizes, device: torch.device, **runtime) -> "object":
    from samscale.spec.run import build_spec

    return build_spec({"data": {"name": "cifar10-standin"}, "model": {"family": "resnet18", "size": sizes.filters},
                       "optim": {"name": "sam", "rho": 0.05, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
                       "train": {"epochs": 2, "batch_size": sizes.batch, "seed": 0},
                       "runtime": {"device": device.type, "eval_batch_size": 512, "train_eval_size": 512,
                                   "keep_optimizer_state": True, **runtime}})


def train_run_precision(device: torch.device, sizes: Sizes) -> dict:
    import tempfile

    from samscale.train.loop import train_run

    _random_data((3, 32, 32), sizes.run_n)
    out = {}
    for policy in ("highest", "tf32", "bf16", "fp16"):
        with tempfile.TemporaryDirectory() as workdir:
            result = train_run(_resnet_spec(sizes, device, precision=policy), workdir=workdir)
        out[policy] = {"status": str(result.status), "epoch_s": result.history[-1]["seconds"],
                       "final_train_loss": result.history[-1]["train_loss"],
                       **{k: result.final.get(k) for k in ("device_name", "precision", "torch_version")}}
    out["finite"] = all(math.isfinite(v["final_train_loss"]) for v in out.values())
    return out


def checkpoint(device: torch.device, sizes: Sizes) -> dict:
    import tempfile

    from samscale.train.checkpoint import load_checkpoint
    from samscale.train.loop import train_run
    from samscale.workdir import checkpoint_path

    _random_data((3, 32, 32), sizes.run_n)
    spec = _resnet_spec(sizes, device, cudnn_benchmark=False)  # autotuning may pick other kernels per process
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        whole = train_run(spec, workdir=a)
        train_run(spec, workdir=b, max_epochs=1)
        resumed = train_run(spec, workdir=b)
        state = load_checkpoint(checkpoint_path(b, spec.run_id))
    diffs = [abs(r["train_loss"] - w["train_loss"]) for r, w in zip(resumed.history, whole.history)]
    return {"status": str(resumed.status), "epochs": len(resumed.history), "max_train_loss_difference": max(diffs),
            "checkpoint_tensors_on": sorted({str(t.device) for t in state["model"].values()})}


def _mlp_specs(sizes: Sizes, device: torch.device, width: float, members: int, epochs: int = 2) -> list:
    from samscale.spec.run import build_spec

    arms = [{"name": "sgd"}] + [{"name": "sam", "rho": rho} for rho in (0.01, 0.02, 0.05, 0.1, 0.2)]
    specs = []
    for i in range(members):
        optim = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, **arms[i % len(arms)]}
        specs.append(build_spec({"data": {"name": "mnist", "augment": False}, "model": {"family": "mlp", "size": width},
                                 "optim": optim, "schedule": {"kind": "step", "milestones": [0.5, 0.75]},
                                 "train": {"epochs": epochs, "batch_size": 128, "seed": i // len(arms)},
                                 "runtime": {"device": device.type, "eval_batch_size": 2048,
                                             "train_eval_size": 1024}}))
    return specs


def ensemble(device: torch.device, sizes: Sizes) -> dict:
    import tempfile

    from samscale.train.ensemble import train_ensemble
    from samscale.train.loop import train_run

    _random_data((1, 28, 28), sizes.mnist_n, augment=False)
    specs = _mlp_specs(sizes, device, 1, sizes.pack_members)
    with tempfile.TemporaryDirectory() as workdir:
        synchronize(device)
        started = time.perf_counter()
        packed = train_ensemble(specs, workdir=workdir)
        synchronize(device)
        packed_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        single = [train_run(spec, workdir=workdir) for spec in specs]
        synchronize(device)
        single_s = time.perf_counter() - started
    difference = max(abs(p.history[-1]["train_loss"] - s.history[-1]["train_loss"]) for p, s in zip(packed, single))
    return {"members": len(specs), "packed_s": packed_s, "one_by_one_s": single_s,
            "speed_up": single_s / packed_s, "max_final_train_loss_difference": difference}


def pool(device: torch.device, sizes: Sizes) -> dict:
    import multiprocessing as mp
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    from samscale.spec.run import build_spec
    from samscale.store import RunStore
    from samscale.sweep.executors import LocalPoolExecutor
    from samscale.sweep.gpus import plan_gpu_slots, pool_initializer, visible_gpus, worker_devices
    from samscale.workdir import store_path

    gpus = visible_gpus() if device.type == "cuda" else ["0"]  # the dry run pretends one GPU
    slots = plan_gpu_slots(gpus[:1], runs_per_gpu=2)
    context = mp.get_context("spawn")
    initializer, initargs = pool_initializer(slots, 1, os.getpid(), context)
    with ProcessPoolExecutor(len(slots), mp_context=context, initializer=initializer, initargs=initargs) as workers:
        seen = sorted({f.result() for f in [workers.submit(worker_devices) for _ in range(8)]})
    specs = [build_spec({"data": {"name": "teacher-student", "val_size": 200}, "model": {"family": "mlp", "size": 1},
                         "optim": {"lr": 0.01, "momentum": 0.9}, "train": {"epochs": 2, "batch_size": 64, "seed": seed},
                         "runtime": {"device": "auto"}}) for seed in (0, 1)]
    with tempfile.TemporaryDirectory() as workdir:
        store = store_path(workdir)
        store.parent.mkdir(parents=True, exist_ok=True)
        runs = RunStore(store)
        for spec in specs:
            runs.register(spec)
        started = time.perf_counter()
        outcomes = list(LocalPoolExecutor(2, 1, gpu_slots=slots).run(specs, str(store), workdir))
        wall = time.perf_counter() - started
    return {"slots": [",".join(s) for s in slots], "workers_saw": [visible for _, visible in seen],
            "statuses": sorted(o.status for o in outcomes), "wall_s": wall,
            "devices": sorted({str((o.final or {}).get("device_name")) for o in outcomes})}


def projection_ensemble(device: torch.device, sizes: Sizes) -> dict:
    import tempfile

    from samscale.recipes import get_recipe
    from samscale.sweep.ensemble import DEFAULT_MAX_PACK_PARAMS, DEFAULT_MAX_MEMBERS, plan_packs
    from samscale.sweep.gpus import pack_param_budget, plan_gpu_slots, visible_gpus
    from samscale.train.ensemble import train_ensemble

    grid = [spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"device": device.type})})
            for spec in get_recipe("mnist-mlp").study("paper").expand()]
    slots = plan_gpu_slots(visible_gpus()) if device.type == "cuda" else []
    budget = pack_param_budget(DEFAULT_MAX_PACK_PARAMS, slots)
    packs, singles = plan_packs(grid, DEFAULT_MAX_MEMBERS, max_pack_params=budget)
    _random_data((1, 28, 28), sizes.projection_n, augment=False)
    widths = sorted({s.model.size for s in grid}) if sizes.widths is None else sizes.widths
    per_width = {}
    for width in widths:
        pack = next(p for p in packs if p[0].model.size == width)
        timed_pack = [s.model_copy(update={"train": s.train.model_copy(update={"epochs": 2})}) for s in pack]
        with tempfile.TemporaryDirectory() as workdir:
            rows = []
            train_ensemble(timed_pack, workdir=workdir,
                           on_event=lambda e: rows.append(e.row) if hasattr(e, "row") else None)
        epoch_s = rows[-1]["seconds"] * len(pack) * 55_000 / sizes.projection_n  # the pack's epoch on 55k examples
        packs_of_width = [p for p in packs if p[0].model.size == width]
        per_width[str(width)] = {"members": len(pack), "packs": len(packs_of_width), "pack_epoch_s": epoch_s}
    total = sum(v["pack_epoch_s"] * v["packs"] * grid[0].train.epochs for v in per_width.values())
    return {"runs": len(grid), "packed_runs": sum(len(p) for p in packs), "one_by_one_runs": len(singles),
            "max_pack_params": budget, "per_width": per_width, "projected_hours": total / 3600,
            "note": "packed runs only (one-by-one runs: see projection); evaluations included"}


SECTIONS = {"sam_sgd": sam_sgd, "pipeline": pipeline, "precision": precision, "projection": projection,
            "hessian": hessian, "train_run": train_run_precision, "checkpoint": checkpoint, "ensemble": ensemble,
            "pool": pool, "projection_ensemble": projection_ensemble}
SHARE = {"sam_sgd": 20, "pipeline": 40, "precision": 10, "projection": 40, "hessian": 15, "train_run": 40,
         "checkpoint": 20, "ensemble": 40, "pool": 30, "projection_ensemble": 60}
"""Seconds a section needs on an H100 at most (estimates); it is skipped when less than this is left."""


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
    parser.add_argument("--budget-s", type=float, default=330.0, help="start no section after this (see SHARE)")
    args = parser.parse_args()
    began = time.perf_counter()
    if args.cpu_dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # toy sizes: threads only add overhead
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True  # as train_run sets it (runtime.cudnn_benchmark)
    else:
        parser.error("no CUDA device: run with --cpu-dry-run to check the script on the CPU")
    sizes = Sizes(dry=args.cpu_dry_run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
        "torch": torch.__version__, "dry_run": args.cpu_dry_run,
    }
    for name in args.only or list(SECTIONS):
        started = time.perf_counter()
        if not args.cpu_dry_run and started - began + SHARE[name] > args.budget_s:
            results[name] = {"skipped": f"out of time ({started - began:.0f} s of {args.budget_s:.0f} s spent)"}
            print(f"[{name}] skipped", flush=True)
            continue
        try:
            results[name] = SECTIONS[name](device, sizes)
        except Exception as error:  # noqa: BLE001 - one broken section must not hide the others
            results[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        results[name]["section_s"] = time.perf_counter() - started
        print(f"[{name}] {json.dumps(results[name], default=str)}", flush=True)
        (out / "gpu_results.json").write_text(json.dumps(results, indent=1, default=str))  # kept if a later one crashes
    (out / "gpu_results.md").write_text(markdown(results))
    results["total_s"] = time.perf_counter() - began
    (out / "gpu_results.json").write_text(json.dumps(results, indent=1, default=str))
    failed = [name for name in args.only or SECTIONS if "error" in results[name]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
