"""PyTorch Lightning drives SAM: automatic optimization (Lightning calls ``optimizer.step(closure)``) and manual
optimization (``opt.step(closure)`` in the training step), a step-interval LR scheduler, BatchNorm in the model.
Weights and BatchNorm buffers must equal a ``sam_update`` loop over the same batches, bitwise, in float64 and under
bf16 autocast."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, sam_update

L = pytest.importorskip("lightning")

STEPS, BATCH = 6, 16


def body(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))


def make_sam(model: nn.Module, params) -> SAM:
    return SAM(params, torch.optim.SGD, rho=0.2, lr=0.2, momentum=0.9, weight_decay=5e-4, model=model)


def make_scheduler(opt: SAM) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


class Net(L.LightningModule):
    """A classifier with BatchNorm whose optimizer is SAM given the module (the BatchNorm guard)."""

    def __init__(self, manual: bool = False):
        super().__init__()
        self.net = body()
        self.automatic_optimization = not manual

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.automatic_optimization:
            return F.cross_entropy(self(x), y)
        opt = self.optimizers()

        def closure():
            loss = F.cross_entropy(self(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            return loss

        opt.step(closure=closure)
        self.lr_schedulers().step()

    def configure_optimizers(self):
        opt = make_sam(self, self.parameters())
        return {"optimizer": opt, "lr_scheduler": {"scheduler": make_scheduler(opt), "interval": "step"}}


def data(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 8, generator=gen).to(dtype) * 2 + 0.5, torch.randint(0, 4, (BATCH,), generator=gen))
            for _ in range(STEPS)]


def fit(precision: str, manual: bool, batches) -> Net:
    module = Net(manual=manual)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])),
        batch_size=BATCH, shuffle=False,
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=precision, max_steps=STEPS, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no validation loop", "few workers"
        trainer.fit(module, loader)
    assert trainer.global_step == STEPS
    return module


def reference(dtype: torch.dtype, batches, autocast: bool) -> nn.Module:
    model = body().to(dtype)
    opt = make_sam(model, model.parameters())
    scheduler = make_scheduler(opt)
    for x, y in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            sam_update(model, F.cross_entropy, x, y, opt)
        scheduler.step()
    return model


def max_diffs(module: Net, model: nn.Module) -> tuple[float, float]:
    """Largest |difference| over the weights and over the BatchNorm running statistics."""
    got, want = module.net.state_dict(), model.state_dict()
    weights = max((got[k] - want[k]).abs().max().item() for k, _ in model.named_parameters())
    stats = max((got[k] - want[k]).abs().max().item() for k in want if k.endswith(("running_mean", "running_var")))
    assert all(torch.equal(got[k], want[k]) for k in want if k.endswith("num_batches_tracked"))
    return weights, stats


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_float64_weights_and_batchnorm_buffers_equal_sam_update(manual):
    batches = data(torch.float64)
    module = fit("64-true", manual, batches)
    model = reference(torch.float64, batches, autocast=False)
    assert module.net[1].num_batches_tracked.item() == STEPS  # one count per step: the perturbed pass is not counted
    assert max_diffs(module, model) == (0.0, 0.0)
    assert module.net[0].weight.dtype == torch.float64
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.2 * 0.5 ** (STEPS // 2))


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_bf16_mixed_matches_sam_update_under_the_same_autocast(manual):
    # Lightning runs each training step (forward and loss) in its own autocast region and the backward pass outside
    # it; sam_update here runs the whole update inside one region. Backward kernels take their dtypes from the
    # forward graph and SAM drops autocast's cached weight casts when the weights move, so both execute the same
    # kernels on the same numbers: the tolerance is zero (bitwise equal), on any CPU, since both run on the same one.
    batches = data(torch.float32)
    module = fit("bf16-mixed", manual, batches)
    model = reference(torch.float32, batches, autocast=True)
    assert max_diffs(module, model) == (0.0, 0.0)
    assert module.net[0].weight.dtype == torch.float32
