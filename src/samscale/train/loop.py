"""One run, top to bottom: data → model → optimizer → epochs of (train, evaluate, checkpoint) → final summary.

`train_run(spec)` is the only entry point. It resumes from the run's checkpoint when one exists, reports what happens
through events (`samscale.train.events`; it never writes the run store), ends with status `diverged` instead of
crashing on a non-finite loss, and is deterministic on CPU for a given RunSpec. It leaves the process as it found it:
the global RNG and torch's thread count are restored when it returns.
"""
from __future__ import annotations

import contextlib
import math
import os
import resource
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samscale.data import Dataset, ImageFolderSplit, Split, load_dataset, make_loader
from samscale.data.text import IGNORE_LABEL
from samscale.models.registry import build_model, count_params
from samscale.optim import SAM, sam_update
from samscale.optim.cheap import CheapSAM, LateSAM, RandomSAM
from samscale.optim.looksam import LookSAM
from samscale.optim.momentum_sam import MomentumSAM
from samscale.optim.sync import GradientSync, rank_slice
from samscale.sparsity import MaskEnforcer, make_masks
from samscale.spec.run import DataSpec, RunSpec
from samscale.spec.status import RunStatus
from samscale.train.checkpoint import Fence, origin, resume_state, save_checkpoint
from samscale.train.curvature import analyze_model
from samscale.train.distributed import launch
from samscale.train.placement import launched_by_torchrun, torchrun_group
from samscale.train.precision import autocast, compute_record, grad_scaler, precision_policy
from samscale.train.events import EpochEnded, EventHandler, RunEnded, RunStarted
from samscale.train.rl import train_rl
from samscale.train.metrics import EpochMeter, evaluate
from samscale.train.schedule import lr_multiplier
from samscale.train.summary import summarize_history, validation_score
from samscale.hessian.analyze import scalar_summary
from samscale.workdir import checkpoint_path

# Seeds of the run's random streams, all derived from `train.seed` so that one seed fixes everything. The offsets
# are large odd numbers so that the streams of seeds s and s + 1 never coincide.
DATA_ORDER_SEED_OFFSET = 1_000_003  # shuffling and augmentation of the training set
SNIP_BATCH_SEED_OFFSET = 2_000_003  # the batch SNIP scores weights on
MASK_SEED_OFFSET = 3_000_017  # random layer-wise pruning masks
RANDOM_SAM_SEED_OFFSET = 4_000_037  # random_sam's choice of SAM steps


@dataclass
class RunResult:
    """What a run ended with: status (complete, diverged; failed only for a pack member that could not start, with
    its error), final summary metrics and per-epoch history."""

    run_id: str
    status: str
    final: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None  # why a run that could not start failed (status `failed`; e.g. a pack member)


@lru_cache(maxsize=4)
def _cached_dataset(data_json: str) -> Dataset:
    data = DataSpec.model_validate_json(data_json)
    return load_dataset(
        data.name,
        val_size=data.val_size,
        split_seed=data.split_seed,
        train_subset=data.train_subset,
        label_noise=data.label_noise,
        noise_seed=data.noise_seed,
        augment=data.augment,
        **data.options,
    )


def dataset_for(spec: RunSpec) -> Dataset:
    """The run's dataset (loaded once per process and data configuration)."""
    return _cached_dataset(spec.data.model_dump_json())


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def loss_function(dataset: Dataset) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy for classification, mean squared error for regression (means over the batch); for tagging,
    cross-entropy averaged over the batch's real tokens (padding targets are IGNORE_LABEL and count for nothing);
    for multilabel, binary cross-entropy with logits averaged over the batch's labelled entries (NaN: missing)."""
    if dataset.task == "classification":
        return F.cross_entropy
    if dataset.task == "tagging":
        return token_cross_entropy
    if dataset.task == "multilabel":
        return labelled_binary_cross_entropy
    return lambda output, target: F.mse_loss(output.reshape(target.shape), target)


def token_cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over the real tokens of (N, L, C) logits against (N, L) labels (IGNORE_LABEL: padding)."""
    return F.cross_entropy(output.flatten(0, -2), target.flatten(), ignore_index=IGNORE_LABEL)


def labelled_binary_cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Mean binary cross-entropy with logits of (N, T) outputs over the entries of (N, T) 0/1 targets that are not
    NaN (missing labels), as OGB's molecule examples train; 0 for a batch without a single label (no gradient)."""
    labelled = ~torch.isnan(target)
    losses = F.binary_cross_entropy_with_logits(output, torch.where(labelled, target, 0.0), reduction="none")
    return (losses * labelled).sum() / labelled.sum().clamp_min(1)


def build_optimizer(spec: RunSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The base optimizer, wrapped in SAM/USAM/ASAM when the spec asks for it (authors' coupled weight decay)."""
    o = spec.optim
    if o.base == "sgd":
        base_cls: type[torch.optim.Optimizer] = torch.optim.SGD
        kwargs: dict[str, Any] = dict(lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    else:
        base_cls = torch.optim.Adam if o.base == "adam" else torch.optim.AdamW
        kwargs = dict(lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if not o.is_sam:
        return base_cls(params, **kwargs)
    return SAM(
        params,
        base_cls,
        rho=o.rho,
        normalize=o.name != "usam",
        adaptive=o.name == "asam",
        eta=o.asam_eta,
        **kwargs,
    )


def build_variant(spec: RunSpec, optimizer: torch.optim.Optimizer, total_steps: int) -> CheapSAM | None:
    """The per-step rule of a cheap SAM variant around the run's SAM optimizer (None for SGD, SAM, USAM, ASAM)."""
    o = spec.optim
    if o.name == "looksam":
        return LookSAM(optimizer, total_steps, k=o.looksam_k, alpha=o.looksam_alpha)
    if o.name == "late_sam":
        return LateSAM(optimizer, total_steps, start=o.late_start)
    if o.name == "random_sam":
        return RandomSAM(optimizer, total_steps, o.random_p, o.random_p_end,
                         seed=spec.train.seed + RANDOM_SAM_SEED_OFFSET)
    if o.name == "momentum_sam":
        return MomentumSAM(optimizer, total_steps)
    return None


def build_model_for(spec: RunSpec, dataset: Dataset) -> nn.Module:
    """The spec's model, sized for the dataset's input shape and output dimension, initialized from the run seed.

    The initialization draws from torch's global RNG seeded with `train.seed`, inside a fork, so the caller's global
    RNG state is the same afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.train.seed)
        return build_model(
            spec.model.family,
            spec.model.size,
            input_shape=tuple(dataset.input_shape),
            num_classes=dataset.output_dim,
            **spec.model.options,
        )


_DEVICE_COPIES: dict[tuple[int, str], tuple[Split, Split]] = {}
_DEVICE_COPIES_KEPT = 8  # splits whose device copy is kept (the dataset cache holds 4 datasets of 3 splits at most)


def _split_to(split: Split | ImageFolderSplit, device: torch.device) -> Split | ImageFolderSplit:
    """In-memory splits move to the device once per process: every run of the process that trains on the same split
    (the members of an ensemble pack, runs one after another in a worker) shares one device copy. Image folders
    stay on disk and stream."""
    if not isinstance(split, Split) or split.x.device == device:
        return split
    key = (id(split), str(device))
    if key not in _DEVICE_COPIES:  # the entry keeps `split` alive, so its id is not reused while cached
        while len(_DEVICE_COPIES) >= _DEVICE_COPIES_KEPT:
            _DEVICE_COPIES.pop(next(iter(_DEVICE_COPIES)))
        _DEVICE_COPIES[key] = (split, Split(split.x.to(device), split.y.to(device)))
    return _DEVICE_COPIES[key][1]


def _head(split: Split | ImageFolderSplit, n: int) -> Split | ImageFolderSplit:
    """The first `n` examples of a split, without training augmentation."""
    if isinstance(split, ImageFolderSplit):
        return split.subset(torch.arange(min(n, len(split)))).as_eval()
    return Split(split.x[:n], split.y[:n])


class _Run:
    """The mutable state of one run between epochs (kept together so checkpoints capture all of it)."""

    def __init__(self, spec: RunSpec, device: torch.device):
        self.spec = spec
        self.device = device
        self.dataset = dataset_for(spec)
        self.loss_fn = loss_function(self.dataset)
        self.train_split = _split_to(self.dataset.train, device)
        self.eval_splits = {
            name: _split_to(split, device)
            for name, split in (("val", self.dataset.val), ("test", self.dataset.test))
            if len(split) > 0
        }
        self.model = build_model_for(spec, self.dataset).to(device)
        self.channels_last = spec.runtime.channels_last and device.type == "cuda"  # CPU convs: slow or crash
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.n_params = count_params(self.model)
        self.generator = torch.Generator().manual_seed(spec.train.seed + DATA_ORDER_SEED_OFFSET)
        self.optimizer = build_optimizer(spec, list(self.model.parameters()))
        masks = self._make_masks()
        if masks is not None:  # pruned weights get zero gradients and are re-zeroed after every base step
            base = self.optimizer.base_optimizer if isinstance(self.optimizer, SAM) else self.optimizer
            MaskEnforcer(self.model, masks).attach(base)
        self.sync = GradientSync.from_environment(spec.optim.sam_mode)  # None unless one of several processes
        # Image folders stream: decoded by threads, pinned for the GPU, and each process decodes only its slice.
        self.streamed = isinstance(self.train_split, ImageFolderSplit)
        self.loader_options: dict[str, Any] = {}
        if self.streamed:
            self.loader_options = dict(num_workers=_loader_workers(spec), pin_memory=device.type == "cuda")
        shard = (self.sync.rank, self.sync.world_size) if self.streamed and self.sync is not None else None
        self.loader = make_loader(
            self.train_split,
            spec.train.batch_size,
            shuffle=True,
            generator=self.generator,
            augment=self.dataset.train_augment,  # None when the spec turns augmentation off
            shard=shard,
            **self.loader_options,
        )
        multiplier = lr_multiplier(spec.schedule, spec.train.epochs, len(self.loader))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, multiplier)
        self.forward = torch.compile(self.model) if spec.runtime.compile else self.model
        self.scaler = grad_scaler(spec.runtime.precision, device)  # fp16 only
        self.variant = build_variant(spec, self.optimizer, spec.train.epochs * len(self.loader))  # one process only
        # What training has cost so far (checkpointed): forward-backward passes over a mini-batch (a pass over the
        # whole batch counts once, however it is split into chunks, micro-batches or processes), the passes on the
        # critical path (a pass that needs the previous one's gradient), and wall time of the training steps.
        self.cost = {"grad_evals": 0, "sequential_grad_evals": 0, "optimizer_seconds": 0.0}
        self.is_main = self.sync is None or self.sync.is_main  # only rank 0 writes checkpoints and evaluates
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    def _make_masks(self) -> dict[str, Tensor] | None:
        """Pruning masks at initialization (None for dense runs); deterministic in the run seed."""
        sparsity = self.spec.sparsity
        if sparsity.method == "none":
            return None
        batch = None
        if sparsity.method == "snip":
            generator = torch.Generator().manual_seed(self.spec.train.seed + SNIP_BATCH_SEED_OFFSET)
            first = next(iter(make_loader(self.train_split, self.spec.train.batch_size, shuffle=True,
                                          generator=generator)))
            batch = tuple(t.to(self.device) for t in first)
        return make_masks(
            self.model,
            sparsity.method,
            sparsity.sparsity,
            generator=torch.Generator().manual_seed(self.spec.train.seed + MASK_SEED_OFFSET),
            batch=batch,
            loss_fn=self.loss_fn,
        )

    # -- checkpoint state ------------------------------------------------------------------------------------
    def state(self, *, weights_only: bool = False, fence: Fence | None = None) -> dict[str, Any]:
        """Everything needed to continue this run bit-identically, and where it comes from (run, attempt of
        `fence`'s claim, code version).

        With `weights_only` (a finished run), the optimizer, scheduler and data-order state are left out: analysis
        needs the weights, and a finished run is never continued.
        """
        state = {
            "run_id": self.spec.run_id,
            **origin(self.spec.run_id, fence),
            "spec": self.spec.model_dump_json(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "history": self.history,
            "cost": dict(self.cost),
        }
        if not weights_only:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         generator=self.generator.get_state())
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            if self.variant is not None:
                state["variant"] = self.variant.state_dict()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `state()` (a weights-only one only if the run is finished)."""
        if state.get("run_id") != self.spec.run_id:
            raise ValueError(f"checkpoint is of run {state.get('run_id')!r}, not of run {self.spec.run_id!r}")
        self.model.load_state_dict(state["model"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.cost.update(state.get("cost", {}))
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.variant is not None:
                self.variant.load_state_dict(state["variant"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.generator.set_state(state["generator"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
        elif self.epoch < self.spec.train.epochs:
            raise ValueError(f"checkpoint of run {self.spec.run_id} at epoch {self.epoch} has no optimizer state; "
                             "only a finished run's checkpoint may be weights-only")

    # -- one epoch -------------------------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """One pass over the training set; returns the running mean loss/accuracy of the clean passes."""
        self.model.train()
        meter = EpochMeter(self.dataset.task)
        autocast = _autocast(self.spec, self.device)
        scaler = self.scaler
        started = time.perf_counter()
        for x, y in self.loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.sync is not None:
                if _smallest_slice(len(y), self.sync.world_size) < 2:  # a tail batch too small to split: skipped
                    self.scheduler.step()
                    continue
                loss, output = self._distributed_step(x, y, autocast)
                self.count_passes(2 if isinstance(self.optimizer, SAM) else 1)
                self.scheduler.step()
                meter.update(loss, output, y)
                continue
            with autocast:
                if self.variant is not None:
                    step = self.variant.update(self.forward, self.loss_fn, x, y)
                    loss, output = step.loss, step.output
                    self.count_passes(step.grad_evals, step.sequential_grad_evals)
                elif isinstance(self.optimizer, SAM):
                    loss, output = sam_update(self.forward, self.loss_fn, x, y, self.optimizer, m=self.spec.optim.m,
                                              scaler=scaler)
                    self.count_passes(2)
                else:
                    output = self.forward(x)
                    loss = self.loss_fn(output, y)
                    self.optimizer.zero_grad(set_to_none=True)
                    _step(self.optimizer, loss, scaler)
                    self.count_passes(1)
            self.scheduler.step()
            meter.update(loss, output.detach(), y)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.cost["optimizer_seconds"] += time.perf_counter() - started
        return meter.result(prefix="train_")

    def count_passes(self, grad_evals: int, sequential: int | None = None) -> None:
        """Add one step's forward-backward passes (and those of them that ran one after another)."""
        self.cost["grad_evals"] += grad_evals
        self.cost["sequential_grad_evals"] += grad_evals if sequential is None else sequential

    def memory_summary(self) -> dict[str, Any]:
        """Peak memory and the optimizer's own state in MiB.

        `peak_memory_mb` is the peak of allocated CUDA memory since the run started on a GPU, and on a CPU the
        process's peak resident set (`peak_memory_scope` says which; the process figure includes whatever the
        process held before this run). `optimizer_state_mb` counts what the optimizer holds beyond weights and
        gradients: the base optimizer's state (momentum buffers, Adam moments) plus one weight-sized copy for every
        SAM-family optimizer (w + ε, or w set aside by momentum_sam during its pass) and one more for LookSAM's
        stored direction.
        """
        base = getattr(self.optimizer, "base_optimizer", self.optimizer)
        tensors = {id(t): t for state in base.state.values() for t in state.values() if isinstance(t, Tensor)}
        state_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
        copies = (1 if isinstance(self.optimizer, SAM) else 0) + (1 if isinstance(self.variant, LookSAM) else 0)
        state_bytes += copies * sum(p.numel() * p.element_size() for p in self.model.parameters())
        if self.device.type == "cuda":
            peak, scope = torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda_allocated"
        else:
            peak, scope = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_rss"
        return {"peak_memory_mb": peak, "peak_memory_scope": scope, "optimizer_state_mb": state_bytes / 2**20}

    def _distributed_step(self, x: Tensor, y: Tensor, autocast: Any) -> tuple[Tensor, Tensor]:
        """This process's slice of the global batch through one synced step; the whole batch's loss and outputs."""
        sync = self.sync
        part = rank_slice(len(y), sync.rank, sync.world_size)
        x_local, y_local = (x if self.streamed else x[part]), y[part]  # a streamed batch holds only this slice
        share = len(y_local) / len(y)
        with autocast:
            if isinstance(self.optimizer, SAM):
                loss, output = sam_update(self.forward, self.loss_fn, x_local, y_local, self.optimizer,
                                          m=self.spec.optim.m, sync=sync, share=share, scaler=self.scaler)
            else:
                output = self.forward(x_local)
                loss = self.loss_fn(output, y_local)
                self.optimizer.zero_grad(set_to_none=True)
                _step(self.optimizer, loss, self.scaler,
                      before_step=lambda: sync.average_grads_(list(self.model.parameters()), share))
                sync.average_bn_stats_(self.model, share)
        loss = loss.detach().reshape(1).clone()
        sync.average_([loss], share)
        return loss[0], sync.assemble(output.detach(), part.start, len(y))

    def evaluate(self, split: Split | ImageFolderSplit, prefix: str) -> dict[str, float]:
        """Loss (and accuracy) of the current model over a whole split, in eval mode."""
        loader = make_loader(split, self.spec.runtime.eval_batch_size, shuffle=False, **self.loader_options)
        return evaluate(self.forward, loader, self.loss_fn, self.device, prefix=prefix, task=self.dataset.task)

    def evaluate_all(self) -> dict[str, float]:
        """Validation and test metrics of the current model."""
        metrics: dict[str, float] = {}
        for name, split in self.eval_splits.items():
            metrics.update(self.evaluate(split, prefix=f"{name}_"))
        return metrics


def _loader_workers(spec: RunSpec) -> int:
    """Threads decoding a streamed split: `runtime.loader_workers`, else this process's share of the cores."""
    if spec.runtime.loader_workers is not None:
        return spec.runtime.loader_workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // spec.runtime.nproc)


def _smallest_slice(n: int, world_size: int) -> int:
    """Examples of the smallest per-process slice of a batch of n (BatchNorm needs 2 in every process)."""
    return min(len(range(n)[rank_slice(n, rank, world_size)]) for rank in range(world_size))


def _autocast(spec: RunSpec, device: torch.device):
    return autocast(spec.runtime.precision, device)


def _step(optimizer: torch.optim.Optimizer, loss: Tensor, scaler: torch.amp.GradScaler | None,
          before_step: Callable[[], None] | None = None) -> None:
    """Backward and one optimizer step, through `scaler` when there is one (fp16: an overflowing step is skipped);
    `before_step` runs on the gradients first, e.g. to average them over processes. With a scaler it averages the
    scaled gradients (one scale on every process), so an overflow in any process reaches all of them before the
    scaler looks for it, and every process skips the same steps."""
    if scaler is None:
        loss.backward()
        if before_step is not None:
            before_step()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if before_step is not None:
        before_step()
    scaler.step(optimizer)
    scaler.update()


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` torch threads inside the block and restore the process's setting afterwards."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_run(
    spec: RunSpec,
    *,
    workdir: str | Path | None = None,
    on_event: EventHandler | None = None,
    max_epochs: int | None = None,
    fence: Fence | None = None,
) -> RunResult:
    """Train one run to completion (or divergence), resuming from its checkpoint under `workdir` if present.

    Events (`RunStarted`, `EpochEnded`, `RunEnded`) go to `on_event`. `max_epochs` stops early after that many
    epochs in this call (the run stays resumable; the result's status is `running`); used to test resume.
    `fence` (the run store's claim) fences every checkpoint write: a holder that lost the run raises ClaimLost
    instead of writing. A checkpoint of another code version is refused (ConfigError), never resumed.
    With `runtime.nproc` > 1 the run is trained by that many processes (`samscale.train.distributed`); only rank 0
    writes checkpoints, evaluates and reports, and the call returns rank 0's result.
    """
    if spec.runtime.nproc > 1 and GradientSync.from_environment() is None:
        if launched_by_torchrun():  # one of torchrun's ranks: join its group (env:// rendezvous, may span nodes)
            with torchrun_group(spec.runtime.nproc, spec.runtime.device):
                return train_run(spec, workdir=workdir, on_event=on_event, max_epochs=max_epochs, fence=fence)
        return launch(train_run, spec, workdir=workdir, on_event=on_event, max_epochs=max_epochs, fence=fence)
    device = resolve_device(spec.runtime.device)
    with _torch_threads(spec.runtime.threads), precision_policy(
            spec.runtime.precision, cudnn_benchmark=spec.runtime.cudnn_benchmark and device.type == "cuda"):
        return _train(spec, workdir, on_event or (lambda event: None), max_epochs, fence)


def _train(spec: RunSpec, workdir: str | Path | None, emit: EventHandler, max_epochs: int | None,
           fence: Fence | None) -> RunResult:
    device = resolve_device(spec.runtime.device)
    if spec.rl.env is not None:  # a DQN run: its own loop (samscale.train.rl), the same events and checkpoints
        record = compute_record(device, spec.runtime.precision)

        def emit_recorded(event: Any) -> None:
            if isinstance(event, RunEnded):
                event.final.update(record)
            emit(event)

        status, final, history = train_rl(spec, workdir, emit_recorded, max_epochs, device=device,
                                          build_optimizer=build_optimizer, fence=fence)
        return RunResult(spec.run_id, status, final, history)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = _Run(spec, device)
    run_id = spec.run_id
    ckpt = checkpoint_path(workdir, run_id) if workdir is not None else None
    if ckpt is not None and (state := resume_state(ckpt)) is not None:
        run.restore(state)
    emit(RunStarted(spec, run.n_params, list(run.history)))

    status = RunStatus.COMPLETE
    epochs_this_call = 0
    while run.epoch < spec.train.epochs:
        if max_epochs is not None and epochs_this_call >= max_epochs:
            return RunResult(run_id, RunStatus.RUNNING, {}, run.history)
        started = time.perf_counter()
        lr = run.scheduler.get_last_lr()[0]  # the rate this epoch starts with (step schedules: its rate)
        metrics = run.train_epoch()
        run.epoch += 1
        epochs_this_call += 1
        if not math.isfinite(metrics["train_loss"]):
            status = RunStatus.DIVERGED
            row = {"epoch": run.epoch, "lr": lr, **metrics}
            run.history.append(row)
            emit(EpochEnded(run_id, run.epoch, row))
            break
        if run.is_main:
            metrics.update(run.evaluate_all())
        row = {"epoch": run.epoch, "lr": lr, "seconds": time.perf_counter() - started}
        row.update(metrics)
        run.history.append(row)
        if ckpt is not None and run.is_main:
            save_checkpoint(ckpt, run.state(fence=fence), fence)
        emit(EpochEnded(run_id, run.epoch, row))

    final = summarize_history(run.history, score=validation_score(run.dataset.task))
    final["n_params"] = run.n_params
    final["n_nonzero"] = int(sum(int((p != 0).sum()) for p in run.model.parameters()))
    final["data_source"] = run.dataset.source
    final.update(run.cost)
    final.update(run.memory_summary())
    final["substitute_for"] = run.dataset.substitute_for
    final.update(compute_record(device, spec.runtime.precision))
    if status == RunStatus.COMPLETE and run.is_main:
        final.update(run.evaluate(_head(run.train_split, spec.runtime.train_eval_size), prefix="final_train_"))
        if spec.analysis.what:
            report = analyze_model(spec, run.model, run.dataset, run.loss_fn)
            final.update({f"analysis.{name}": value for name, value in scalar_summary(report).items()})
        if ckpt is not None:
            save_checkpoint(ckpt, run.state(weights_only=not spec.runtime.keep_optimizer_state, fence=fence), fence)
    emit(RunEnded(run_id, status, final))
    return RunResult(run_id, status, final, run.history)
