"""Many runs of one model family, size and data trained as one batched model, each member still its own run.

A size study is hundreds of runs of small models: on a CPU each run is dominated by per-step overhead, on a GPU a
small model cannot fill the device. `train_ensemble(specs)` trains K compatible runs (`pack_key` equal: same data,
model, schedule, epochs, batch size and runtime; free to differ in seed and optimizer settings) in lockstep: their
parameters are stacked along a leading member dimension and every forward/backward pass is one `torch.func.vmap` of
`functional_call` over the members. Each member keeps exactly the semantics of `train_run`:

- its own initialization, data order and augmentation: every member is a `samscale.train.loop._Run`, built and
  seeded exactly as `train_run` builds it, and draws its batches from its own loader and generator;
- its own optimizer: SGD (momentum, Nesterov, coupled weight decay, per-member learning rate from its own
  scheduler) or SAM / USAM / ASAM around SGD with its own ρ, η and its own global gradient norm; SGD members take a
  plain step from the clean gradient (the perturbed pass runs only for the SAM members, which come first);
- its own BatchNorm statistics (stacked buffers; the perturbed pass never updates them, as in `sam_update`);
- its own divergence: a member whose epoch ends with a non-finite training loss ends `diverged` and leaves the
  pack; the others go on;
- its own events (`RunStarted`, `EpochEnded`, `RunEnded`), history and checkpoint, in `train_run`'s format, so a
  member can be resumed by `train_run` and a run checkpointed by `train_run` can join a pack. A finished member's
  final metrics, end-of-training analysis and weights-only checkpoint are produced by `train_run` itself, resuming
  from the member's last checkpoint;
- its own failures: a member that cannot be built or restored (say, its checkpoint is damaged), or whose end
  (`train_run` resuming its finished checkpoint) raises, leaves the pack with its own error (a `failed` RunResult)
  and the others train on; a member whose run another sweep took over (`ClaimLost` from its fenced checkpoint or
  recorded epoch) ends `lost` and leaves the pack. An error of the pack's shared training step ends every member
  still in it.

Numbers equal one-by-one `train_run` within floating-point tolerance, not bitwise: batched matrix products and the
per-member norms sum in a different order. The "seconds" of an epoch row is the pack's epoch time divided by the
number of members trained in that epoch (each member's share of the machine).

What cannot be packed (`unpackable_reason` says why; executors train such runs one by one with `train_run`): model
families outside `PACKABLE_FAMILIES` (ResNet-50 and ViT are untested here; graph and RL models take other inputs),
pruning masks (`sparsity`), m-sharpness (`optim.m`), Adam/AdamW bases, bf16 or fp16 autocast
(`runtime.precision`), streamed image folders (ImageNet), per-token tagging datasets (their loss and accuracy count real tokens, which the pack's meters do not;
they train one by one, exactly), multilabel datasets (labelled-entry losses and average precision over a whole split,
likewise), and any setting this trainer does not know about left at a non-default value.
`runtime.compile` and `runtime.channels_last` only change speed and are ignored here. A pack trains under its
runs' precision policy (`highest` or `tf32`), and a training step reads nothing back from the device: per-member
settings live on the device, the learning rates reach it in a non-blocking copy, and the epoch's metrics are read
once, at its end.
"""
from __future__ import annotations

import copy
import json
import math
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from samscale.data import make_loader
from samscale.data.augment import host_to_device
from samscale.data.registry import DATASETS
from samscale.errors import ClaimLost
from samscale.optim import SAM, frozen_bn_stats
from samscale.spec.run import CHEAP_VARIANTS, RunSpec
from samscale.spec.status import RunStatus
from samscale.train.checkpoint import Fence, resume_state, save_checkpoint
from samscale.train.events import EpochEnded, EventHandler, RunEnded, RunEvent, RunStarted
from samscale.train.loop import RunResult, _Run, _torch_threads, resolve_device, train_run
from samscale.train.precision import compute_record, precision_policy
from samscale.train.summary import summarize_history, validation_score
from samscale.workdir import checkpoint_path

PACKABLE_FAMILIES: tuple[str, ...] = ("mlp", "two_layer", "resnet18", "resnet")
"""Model families the ensemble trainer packs (tested against one-by-one training)."""

STREAMED_DATASETS: tuple[str, ...] = ("imagenet",)
"""Datasets read from disk batch by batch (image folders), which the ensemble does not pack."""

# Spec fields the ensemble trainer implements; any other field of these sections must keep its default value.
_KNOWN_FIELDS: dict[str, tuple[str, ...]] = {
    "optim": ("name", "base", "lr", "momentum", "nesterov", "weight_decay", "betas", "rho", "m", "asam_eta"),
    "train": ("epochs", "batch_size", "seed"),
    "runtime": ("device", "threads", "compile", "channels_last", "bf16", "precision", "analysis_precision",
                "cudnn_benchmark", "loader_workers", "eval_batch_size", "train_eval_size", "keep_optimizer_state"),
    "sparsity": ("method", "sparsity"),
    "schedule": ("kind", "milestones", "gamma", "warmup_epochs"),
}
_NORM_EPS = 1e-12  # SAM's norm_eps default, as used by build_optimizer


def unpackable_reason(spec: RunSpec) -> str | None:
    """Why `spec` cannot be trained in an ensemble, or None when it can."""
    if spec.model.family not in PACKABLE_FAMILIES:
        return f"model family {spec.model.family!r} is not packable (packable: {', '.join(PACKABLE_FAMILIES)})"
    if spec.optim.base != "sgd":
        return f"base optimizer {spec.optim.base!r} (only SGD-based runs are packed)"
    if spec.optim.name in CHEAP_VARIANTS:
        return f"cheap SAM variant {spec.optim.name!r} (trained one by one)"
    if spec.optim.is_sam and spec.optim.m is not None:
        return f"m-sharpness (optim.m={spec.optim.m})"
    if spec.sparsity.method != "none":
        return f"pruning at initialization (sparsity.method={spec.sparsity.method!r})"
    if spec.runtime.precision in ("bf16", "fp16"):
        return f"{spec.runtime.precision} autocast (runtime.precision={spec.runtime.precision})"
    if spec.data.name in STREAMED_DATASETS:
        return f"dataset {spec.data.name!r} is streamed from disk"
    task = DATASETS[spec.data.name].task
    if task == "tagging":
        return f"dataset {spec.data.name!r} is per-token tagging (trained one by one)"
    if task == "multilabel":
        return f"dataset {spec.data.name!r} is multilabel, scored by average precision (trained one by one)"
    for section, known in _KNOWN_FIELDS.items():
        value = getattr(spec, section)
        default = type(value)()
        for name in type(value).model_fields:
            if name not in known and getattr(value, name) != getattr(default, name):
                return f"{section}.{name}={getattr(value, name)!r} is not supported by the ensemble trainer"
    return None


def pack_key(spec: RunSpec) -> str:
    """Runs with equal keys can train as one pack: everything but the name, seed, optimizer and analyses agrees."""
    tree = spec.model_dump(mode="json")
    for key in ("name", "optim", "analysis"):
        tree.pop(key)
    tree["train"].pop("seed")
    return json.dumps(tree, sort_keys=True)


def train_ensemble(
    specs: list[RunSpec],
    *,
    workdir: str | Path | None = None,
    on_event: EventHandler | None = None,
    max_epochs: int | None = None,
    fence: Fence | None = None,
) -> list[RunResult]:
    """Train the runs `specs` (one pack: equal `pack_key`, all packable) together; one RunResult per spec, in order.

    Like `train_run`: each member resumes from its checkpoint under `workdir` when one exists, events go to
    `on_event`, `max_epochs` stops after that many epochs in this call (members then end `running`), and `fence`
    fences every member's checkpoint writes. Without a `workdir` the checkpoints go to a temporary folder that is
    deleted on return. A member that cannot start or end is returned `failed` with its own error.
    """
    _check_pack(specs)
    if not specs:
        return []
    emit = on_event or (lambda event: None)
    runtime = specs[0].runtime
    benchmark = runtime.cudnn_benchmark and resolve_device(runtime.device).type == "cuda"
    with _torch_threads(runtime.threads), precision_policy(runtime.precision, cudnn_benchmark=benchmark):
        if workdir is None:
            with tempfile.TemporaryDirectory(prefix="samscale-ensemble-") as scratch:
                return _train_members(specs, Path(scratch), emit, max_epochs, fence)
        return _train_members(specs, Path(workdir), emit, max_epochs, fence)


def _check_pack(specs: list[RunSpec]) -> None:
    for spec in specs:
        reason = unpackable_reason(spec)
        if reason is not None:
            raise ValueError(f"run {spec.run_id} ({spec.label()}) cannot be packed: {reason}")
    if len({pack_key(spec) for spec in specs}) > 1:
        raise ValueError("runs of one pack must agree on everything but name, seed, optimizer and analyses; "
                         f"got {len({pack_key(s) for s in specs})} different configurations (group them by pack_key)")
    ids = [spec.run_id for spec in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a pack holds the same run twice: {sorted({i for i in ids if ids.count(i) > 1})}")


class _Member:
    """One run of a pack: its `_Run` (model, loader, optimizer, scheduler, history), checkpoint and status."""

    def __init__(self, spec: RunSpec, device: torch.device, workdir: Path, emit: EventHandler, fence: Fence | None):
        self.spec = spec
        self.fence = fence
        self.run = _Run(spec, device)
        self.ckpt = checkpoint_path(workdir, spec.run_id)
        if (state := resume_state(self.ckpt)) is not None:
            self.run.restore(state)
        self.status = RunStatus.COMPLETE if self.run.epoch >= spec.train.epochs else RunStatus.RUNNING
        self.lost: str | None = None
        self.run.optimizer._opt_called = True  # the pack updates the weights; the scheduler must not warn
        emit(RunStarted(spec, self.run.n_params, list(self.run.history)))

    @property
    def base_optimizer(self) -> torch.optim.Optimizer:
        optimizer = self.run.optimizer
        return optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer

    def end_epoch(self, row: dict[str, float], emit: EventHandler, diverged: bool) -> None:
        """Record a finished epoch (checkpointed unless it diverged, as `train_run` does) and announce it. A member
        whose run was taken over (ClaimLost) ends `lost`, writing nothing more, and leaves the pack."""
        self.run.epoch += 1
        self.run.history.append(row)
        # one (SGD) or two (SAM) passes per step over the member's batches; its share of the pack's time
        self.run.count_passes((2 if self.spec.optim.is_sam else 1) * len(self.run.loader))
        self.run.cost["optimizer_seconds"] += row.get("seconds", 0.0)
        try:
            if diverged:
                self.status = RunStatus.DIVERGED
            else:
                save_checkpoint(self.ckpt, self.run.state(fence=self.fence), self.fence)
                if self.run.epoch >= self.spec.train.epochs:
                    self.status = RunStatus.COMPLETE
            emit(EpochEnded(self.spec.run_id, self.run.epoch, row))
        except ClaimLost as err:
            self.status, self.lost = RunStatus.LOST, str(err)

    def finish(self, workdir: Path, emit: EventHandler) -> RunResult:
        """The member's result; a complete member's final metrics come from `train_run` resuming its checkpoint."""
        run_id = self.spec.run_id
        if self.status == RunStatus.COMPLETE:
            return train_run(self.spec, workdir=workdir, on_event=_without_start(emit), fence=self.fence)
        if self.status in (RunStatus.RUNNING, RunStatus.LOST):
            return RunResult(run_id, self.status, {}, self.run.history, error=self.lost)
        final = summarize_history(self.run.history, score=validation_score(self.run.dataset.task))
        final["n_params"] = self.run.n_params
        final["n_nonzero"] = int(sum(int((p != 0).sum()) for p in self.run.model.parameters()))
        final["data_source"] = self.run.dataset.source
        final["substitute_for"] = self.run.dataset.substitute_for
        final.update(compute_record(self.run.device, self.spec.runtime.precision))
        final.update(self.run.cost)
        final.update(self.run.memory_summary())
        emit(RunEnded(run_id, self.status, final))
        return RunResult(run_id, self.status, final, self.run.history)


def _without_start(emit: EventHandler) -> EventHandler:
    """`emit` minus RunStarted: the member announced its start when it joined the pack."""

    def handler(event: RunEvent) -> None:
        if not isinstance(event, RunStarted):
            emit(event)

    return handler


def _train_members(specs: list[RunSpec], workdir: Path, emit: EventHandler, max_epochs: int | None,
                   fence: Fence | None) -> list[RunResult]:
    device = resolve_device(specs[0].runtime.device)
    members: dict[str, _Member] = {}
    failed: dict[str, RunResult] = {}
    for spec in specs:  # a member that cannot be built or restored leaves the pack with its own error
        try:
            members[spec.run_id] = _Member(spec, device, workdir, emit, fence)
        except ClaimLost as err:
            failed[spec.run_id] = RunResult(spec.run_id, RunStatus.LOST, {}, error=str(err))
        except Exception:
            failed[spec.run_id] = RunResult(spec.run_id, RunStatus.FAILED, {}, error=traceback.format_exc())
    by_epoch: dict[int, list[_Member]] = {}
    for member in members.values():  # members resumed at different epochs train as separate packs
        if member.status == RunStatus.RUNNING:
            by_epoch.setdefault(member.run.epoch, []).append(member)
    for epoch in sorted(by_epoch):
        _Pack(by_epoch[epoch], device).train(emit, max_epochs)
    results = []
    for spec in specs:
        if spec.run_id in failed:
            results.append(failed[spec.run_id])
            continue
        try:
            results.append(members[spec.run_id].finish(workdir, emit))
        except ClaimLost as err:
            results.append(RunResult(spec.run_id, RunStatus.LOST, {}, error=str(err)))
        except Exception:
            results.append(RunResult(spec.run_id, RunStatus.FAILED, {}, error=traceback.format_exc()))
    return results


def _per_member(values: Iterable[float], device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """Per-member settings (lr, ρ, …) as a (K,) tensor on `device`, in the default float dtype unless `dtype` is
    given; on CUDA copied from pinned memory without waiting for the device (a plain copy from pageable memory would
    wait for every queued kernel, once per step for the rates)."""
    return host_to_device(torch.tensor(list(values), dtype=dtype or torch.get_default_dtype()), device)


def _expand(values: Tensor, like: Tensor) -> Tensor:
    """A (K,) tensor viewed to broadcast against a (K, ...) stacked tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class _Pack:
    """The stacked state of members at the same epoch: parameters, buffers, momentum and per-member settings."""

    def __init__(self, members: list[_Member], device: torch.device):
        self.device = device
        self.members = sorted(members, key=lambda m: not m.spec.optim.is_sam)  # SAM members first (stable)
        first = self.members[0].run
        if first.dataset.task not in ("classification", "regression"):
            raise ValueError(f"the ensemble trainer packs classification and regression runs, not {first.dataset.task}")
        self.loss_fn = first.loss_fn
        self.classification = first.dataset.task == "classification"
        self.template = copy.deepcopy(first.model).to("meta")  # structure only; the weights are stacked below
        self.names = [name for name, _ in first.model.named_parameters()]
        self.buffer_names = [name for name, _ in first.model.named_buffers()]
        models = [m.run.model for m in self.members]
        with torch.no_grad():
            self.params = {n: torch.stack([dict(m.named_parameters())[n] for m in models]).requires_grad_()
                           for n in self.names}
            self.buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models]) for n in self.buffer_names}
            self.momentum = [torch.stack([self._momentum_buffer(member, i) for member in self.members])
                             for i in range(len(self.names))]
        optims = [m.spec.optim for m in self.members]
        self.weight_decay = _per_member((o.weight_decay for o in optims), device)
        self.beta = _per_member((o.momentum for o in optims), device)
        self.nesterov = _per_member((o.nesterov for o in optims), device, torch.bool)
        self.any_nesterov = bool(self.nesterov.any())
        self.n_sam = sum(o.is_sam for o in optims)
        sam = optims[: self.n_sam]
        self.rho = _per_member((o.rho for o in sam), device)
        self.eta = _per_member((o.asam_eta for o in sam), device)
        self.adaptive = _per_member((o.name == "asam" for o in sam), device, torch.bool)
        self.any_adaptive = any(o.name == "asam" for o in sam)  # a Python bool: no device read per step
        self.normalize = _per_member((o.name != "usam" for o in sam), device, torch.bool)

    def _momentum_buffer(self, member: _Member, index: int) -> Tensor:
        param = list(member.run.model.parameters())[index]
        buffer = member.base_optimizer.state.get(param, {}).get("momentum_buffer")
        return torch.zeros_like(param) if buffer is None else buffer.detach()

    # -- the batched model -----------------------------------------------------------------------------------
    def _forward(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def _loss(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor):
        output = self._forward(params, buffers, x)
        return self.loss_fn(output, y), output

    def train_step(self, xs: Tensor, ys: Tensor, lrs: Tensor) -> tuple[Tensor, Tensor]:
        """One update of every member on its own batch (xs[k], ys[k]); returns the clean losses and outputs."""
        params = list(self.params.values())
        with torch.enable_grad():
            losses, outputs = vmap(self._loss)(self.params, self.buffers, xs, ys)  # BatchNorm statistics update
            grads = list(torch.autograd.grad(losses.sum(), params))
        s = self.n_sam
        if s:
            perturbed = self._ascend(grads if s == len(self.members) else [g[:s] for g in grads])
            buffers = {n: b[:s] for n, b in self.buffers.items()}
            with torch.enable_grad(), frozen_bn_stats(self.template):
                sam_losses, _ = vmap(self._loss)(perturbed, buffers, xs[:s], ys[:s])
                sam_grads = torch.autograd.grad(sam_losses.sum(), list(perturbed.values()))
            for grad, sam_grad in zip(grads, sam_grads):  # SAM members step with their SAM gradient
                grad[:s] = sam_grad
        self._sgd_step(grads, lrs)
        return losses.detach(), outputs.detach()

    @torch.no_grad()
    def _ascend(self, grads: list[Tensor]) -> dict[str, Tensor]:
        """w + ε for the SAM members, each with its own ρ and global norm (see `samscale.optim.SAM.first_step`)."""
        s = self.n_sam
        weights = [self.params[n][:s] for n in self.names]
        t_gs, t2_gs = [], []
        for w, g in zip(weights, grads):
            if w.dim() > 2 and self.any_adaptive:  # ASAM: T = |w| + η on weight tensors
                adaptive = _expand(self.adaptive, w)
                scale = w.abs() + _expand(self.eta, w)
                t_g = scale * g
                t_gs.append(torch.where(adaptive, t_g, g))
                t2_gs.append(torch.where(adaptive, scale * t_g, g))
            else:
                t_gs.append(g)
                t2_gs.append(g)
        norms = torch.stack([torch.linalg.vector_norm(t.flatten(1), dim=1) for t in t_gs])
        norm = torch.linalg.vector_norm(norms, dim=0)
        scale = torch.where(self.normalize, self.rho / (norm + _NORM_EPS), self.rho)
        return {n: (w + _expand(scale, w) * t2).requires_grad_() for n, w, t2 in zip(self.names, weights, t2_gs)}

    @torch.no_grad()
    def _sgd_step(self, grads: list[Tensor], lrs: Tensor) -> None:
        """torch.optim.SGD's update (coupled weight decay, momentum, Nesterov, dampening 0) with per-member settings."""
        for p, g, buf in zip(self.params.values(), grads, self.momentum):
            d = g + _expand(self.weight_decay, p) * p
            beta = _expand(self.beta, p)
            buf.mul_(beta).add_(d)  # a fresh buffer is zero: 0·β + d = d, torch's first-step clone
            d = torch.where(_expand(self.nesterov, p), d + beta * buf, buf) if self.any_nesterov else buf
            p.sub_(_expand(lrs, p) * d)

    # -- epochs ------------------------------------------------------------------------------------------------
    def train(self, emit: EventHandler, max_epochs: int | None) -> None:
        """Train the members epoch by epoch until they finish, diverge, or `max_epochs` epochs are done."""
        epochs_this_call = 0
        while self.members and self.members[0].run.epoch < self.members[0].spec.train.epochs:
            if max_epochs is not None and epochs_this_call >= max_epochs:
                return
            started = time.perf_counter()
            lrs = [m.run.scheduler.get_last_lr()[0] for m in self.members]
            train_metrics = self._train_epoch()
            epochs_this_call += 1
            diverged = [not math.isfinite(metrics["train_loss"]) for metrics in train_metrics]
            for i, member in enumerate(self.members):
                if diverged[i]:
                    self._sync(i, member)
                    member.end_epoch({"epoch": member.run.epoch + 1, "lr": lrs[i], **train_metrics[i]}, emit, True)
            count = len(self.members)
            self._keep([i for i, bad in enumerate(diverged) if not bad])
            lrs = [lr for lr, bad in zip(lrs, diverged) if not bad]
            train_metrics = [metrics for metrics, bad in zip(train_metrics, diverged) if not bad]
            eval_metrics = self._evaluate_all()
            seconds = (time.perf_counter() - started) / count
            for i, member in enumerate(self.members):
                row = {"epoch": member.run.epoch + 1, "lr": lrs[i], "seconds": seconds}
                row.update(train_metrics[i])
                row.update(eval_metrics[i])
                self._sync(i, member)
                member.end_epoch(row, emit, False)
            self._keep([i for i, member in enumerate(self.members) if member.status != RunStatus.LOST])

    def _train_epoch(self) -> list[dict[str, float]]:
        self.template.train()
        meter = _PackMeter(len(self.members), self.classification, self.device)
        lr_groups = [m.run.optimizer.param_groups[0] for m in self.members]
        for batches in zip(*(m.run.loader for m in self.members)):
            xs = torch.stack([x.to(self.device, non_blocking=True) for x, _ in batches])
            ys = torch.stack([y.to(self.device, non_blocking=True) for _, y in batches])
            losses, outputs = self.train_step(xs, ys, _per_member((g["lr"] for g in lr_groups), self.device))
            for member in self.members:
                member.run.scheduler.step()
            meter.update(losses, outputs, ys, n=ys.shape[1])
        return meter.results("train_")

    @torch.no_grad()
    def _evaluate(self, split, prefix: str) -> list[dict[str, float]]:
        """Every member's mean loss (and accuracy) over a whole split in eval mode, as `train.metrics.evaluate`."""
        self.template.eval()
        batch_size = self.members[0].spec.runtime.eval_batch_size
        meter: _PackMeter | None = None
        try:
            for x, y in make_loader(split, batch_size, shuffle=False):
                x, y = x.to(self.device), y.to(self.device)
                meter = meter or _PackMeter(len(self.members), y.dtype == torch.int64, self.device)
                outputs = vmap(self._forward, in_dims=(0, 0, None))(self.params, self.buffers, x)
                meter.update(vmap(self.loss_fn, in_dims=(0, None))(outputs, y), outputs, y, n=y.shape[0])
        finally:
            self.template.train()
        return meter.results(prefix) if meter is not None else [{} for _ in self.members]

    def _evaluate_all(self) -> list[dict[str, float]]:
        metrics: list[dict[str, float]] = [{} for _ in self.members]
        if not self.members:
            return metrics
        for name, split in self.members[0].run.eval_splits.items():
            for row, values in zip(metrics, self._evaluate(split, prefix=f"{name}_")):
                row.update(values)
        return metrics

    # -- members in and out --------------------------------------------------------------------------------------
    @torch.no_grad()
    def _sync(self, i: int, member: _Member) -> None:
        """Write member i's slice of the stacked state into its own model and optimizer (for checkpoints)."""
        model = member.run.model
        for name, param in model.named_parameters():
            param.copy_(self.params[name][i])
        for name, buffer in model.named_buffers():
            buffer.copy_(self.buffers[name][i])
        if member.spec.optim.momentum != 0:  # torch's SGD keeps no buffer without momentum
            state = member.base_optimizer.state
            for param, buffer in zip(model.parameters(), self.momentum):
                state[param]["momentum_buffer"] = buffer[i].clone()

    @torch.no_grad()
    def _keep(self, indices: list[int]) -> None:
        """Drop every member not in `indices` (diverged ones) from the stacked state."""
        if len(indices) == len(self.members):
            return
        index = torch.tensor(indices, dtype=torch.long, device=self.device)
        self.members = [self.members[i] for i in indices]
        self.params = {n: p.index_select(0, index).requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b.index_select(0, index) for n, b in self.buffers.items()}
        self.momentum = [b.index_select(0, index) for b in self.momentum]
        self.weight_decay, self.beta, self.nesterov = (t[index] for t in (self.weight_decay, self.beta, self.nesterov))
        self.any_nesterov = bool(self.nesterov.any())
        sam_index = index[index < self.n_sam]
        self.rho, self.eta, self.adaptive, self.normalize = (
            t[sam_index] for t in (self.rho, self.eta, self.adaptive, self.normalize))
        self.n_sam = len(sam_index)
        self.any_adaptive = any(m.spec.optim.name == "asam" for m in self.members[: self.n_sam])


class _PackMeter:
    """`train.metrics.EpochMeter` for K members at once: example-weighted mean loss (and accuracy) per member."""

    def __init__(self, members: int, classification: bool, device: torch.device):
        self.classification = classification
        self.loss_sum = torch.zeros(members, dtype=torch.float64, device=device)
        self.correct = torch.zeros(members, dtype=torch.int64, device=device)
        self.count = 0

    def update(self, losses: Tensor, outputs: Tensor, targets: Tensor, n: int) -> None:
        """Add one batch of n examples: losses (K,), outputs (K, n, ...), targets (K, n, ...) or shared (n, ...)."""
        self.loss_sum += losses.detach().double() * n
        if self.classification:
            self.correct += (outputs.argmax(dim=-1) == targets).sum(dim=-1)
        self.count += n

    def results(self, prefix: str) -> list[dict[str, Any]]:
        losses, correct = self.loss_sum.tolist(), self.correct.tolist()
        rows = []
        for loss, hits in zip(losses, correct):
            row = {f"{prefix}loss": loss / max(self.count, 1)}
            if self.classification:
                row[f"{prefix}acc"] = hits / max(self.count, 1)
            rows.append(row)
        return rows
