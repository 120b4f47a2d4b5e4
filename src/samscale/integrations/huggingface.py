"""``SAMTrainer``: the Hugging Face ``Trainer`` with a SAM update in place of its plain gradient step.

The Trainer runs ``training_step`` once per micro-batch (accumulating gradients), then clips, calls
``optimizer.step()``, steps its LR scheduler and zeroes the gradients. ``SAMTrainer.training_step`` runs the
clean forward/backward of each micro-batch as the Trainer does (same loss scaling for gradient accumulation, same
``accelerator.backward``, so mixed precision goes through Accelerate's autocast and GradScaler) and keeps the
micro-batch. On the last micro-batch of an update it ascends to w + ε from the accumulated clean gradient (the
whole update's batch), runs the perturbed forward/backward of every kept micro-batch with BatchNorm running
statistics frozen, and restores w. The Trainer's own ``optimizer.step()`` (``SAM.step()`` without a closure) then
lets the base optimizer step with the SAM gradient, and its scheduler steps as usual. Under DDP the last micro-batch
of each pass synchronizes the gradients (the others run under ``no_sync``), so ε comes from the global gradient.

Differences from a plain Trainer step, by design: each update costs two forward/backward passes per micro-batch;
``max_grad_norm`` clips the SAM gradient; with a GradScaler, an inf/NaN in the clean gradient skips the update (the
Trainer's scaler sees it, backs its scale off and the scheduler does not step). DeepSpeed and FSDP are not
supported.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from transformers import Trainer

from samscale.optim.bn import frozen_bn_stats
from samscale.optim.sam import SAM


class SAMTrainer(Trainer):
    """``Trainer`` whose optimizer step is a SAM update; ``rho``, ``adaptive``, ``eta`` and ``normalize`` as in
    ``samscale.optim.SAM``, every other argument as for ``Trainer``.

    Without ``optimizers=(...)`` the optimizer is SAM around the base optimizer that ``TrainingArguments.optim``
    names (AdamW by default), with the Trainer's learning rate, its weight-decay groups and its scheduler. A SAM
    instance passed as ``optimizers=(sam, scheduler)`` is used as given.
    """

    def __init__(
        self,
        *args: Any,
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        self.sam_settings = {"rho": rho, "adaptive": adaptive, "eta": eta, "normalize": normalize}
        self._kept: list[tuple[dict[str, Any], Any]] = []  # this update's micro-batches, for the perturbed passes
        super().__init__(*args, **kwargs)
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError("SAMTrainer supports one device and DDP; DeepSpeed and FSDP are not supported")

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``, starting with no kept micro-batch (a run stopped mid-accumulation leaves some)."""
        self._kept = []
        return super().train(*args, **kwargs)

    def create_optimizer(self, model: nn.Module | None = None) -> Optimizer:
        """SAM around the optimizer class and keyword arguments the Trainer would use, on its parameter groups."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        if self.optimizer_cls_and_kwargs is not None:
            base_cls, base_kwargs = self.optimizer_cls_and_kwargs
        else:
            base_cls, base_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        special = sorted(set(base_kwargs) & {"params", "model", "optimizer_dict"})
        if not (isinstance(base_cls, type) and issubclass(base_cls, Optimizer)) or special:
            raise ValueError(
                f"SAMTrainer wraps a torch optimizer class built from parameter groups; optim={self.args.optim!r} "
                f"gives {base_cls!r} with {special or 'a factory'}: choose e.g. optim='adamw_torch' or 'sgd', or pass "
                "optimizers=(SAM(...), None)"
            )
        decay = set(self.get_decay_parameter_names(opt_model))
        trainable = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in trainable if n in decay], "weight_decay": self.args.weight_decay},
            {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0},
        ]
        self.optimizer = SAM([g for g in groups if g["params"]], base_cls, model=opt_model,
                             **self.sam_settings, **base_kwargs)
        return self.optimizer

    def training_step(
        self, model: nn.Module, inputs: dict[str, Tensor | Any], num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor:
        """The Trainer's clean step on this micro-batch; on the update's last one, also the ascent, every kept
        micro-batch's perturbed pass and the restore (see the module docstring). Returns the clean loss."""
        sam = self._sam()
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._kept.append((inputs, num_items_in_batch))
        if not self.accelerator.sync_gradients:
            return loss
        kept, self._kept = self._kept, []
        scaler = self.accelerator.scaler
        if scaler is not None and scaler.is_enabled():
            if not sam.first_step(scaler=scaler):
                # The clean gradient overflowed: leave it in .grad, so that the Trainer's scaler skips the step,
                # backs its scale off and the scheduler does not step, as for any overflowing Trainer step.
                sam.skip_update(zero_grad=False)
                return loss
            sam.zero_grad(set_to_none=True)
        else:
            sam.first_step(zero_grad=True)
        try:
            with frozen_bn_stats(model):
                for i, (piece, items) in enumerate(kept):
                    last = i == len(kept) - 1
                    with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                        super().training_step(model, piece, items)
        finally:
            sam.restore()
        return loss

    def _sam(self) -> SAM:
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # under Accelerate's wrapper
        if not isinstance(optimizer, SAM):
            raise ValueError(
                f"SAMTrainer needs a samscale SAM optimizer, got {type(optimizer).__name__}: leave optimizers unset "
                "or pass optimizers=(SAM(...), scheduler)"
            )
        return optimizer


__all__ = ["SAMTrainer"]
