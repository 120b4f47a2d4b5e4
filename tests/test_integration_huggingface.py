"""The Hugging Face Trainer drives SAM through SAMTrainer: gradient accumulation, the Trainer's AdamW with its
weight-decay groups and linear LR schedule, BatchNorm frozen in the perturbed pass, bf16 through Accelerate. Models
are built locally (no download, the hub offline); weights must equal a sam_update loop over the same batches, and
BatchNorm buffers a hand-written loop, bitwise."""
from __future__ import annotations

import os

os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})

import logging  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from samscale.optim import SAM, frozen_bn_stats, sam_update  # noqa: E402

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from samscale.integrations import SAMTrainer  # noqa: E402

LR, RHO, DECAY = 0.01, 0.1, 0.01


class BNClassifier(nn.Module):
    """A Trainer-compatible classifier with BatchNorm: forward(x, labels) returns the mean loss and the logits."""

    def __init__(self, loss_factor: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 3))
        self.loss_factor = loss_factor

    def forward(self, x, labels=None):
        logits = self.body(x)
        return {"loss": F.cross_entropy(logits, labels) * self.loss_factor, "logits": logits}


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config)


class Logits(nn.Module):
    """The same BERT as a plain x → logits module for sam_update."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, ids):
        return self.bert(input_ids=ids).logits


def train(tmp_path, model: nn.Module, rows: list[dict], *, batch: int, accumulate: int, steps: int,
          bf16: bool = False, scaler: torch.amp.GradScaler | None = None, rho: float = RHO,
          optimizer: SAM | None = None) -> SAMTrainer:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate,
        max_steps=steps, learning_rate=LR, weight_decay=DECAY, optim="adamw_torch", lr_scheduler_type="linear",
        warmup_steps=0, max_grad_norm=0.0, train_sampling_strategy="sequential", use_cpu=True, bf16=bf16,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, seed=0,
    )
    trainer = SAMTrainer(model=model, args=args, train_dataset=rows, rho=rho, optimizers=(optimizer, None))
    if scaler is not None:
        trainer.accelerator.scaler = scaler  # before train() prepares the optimizer, which takes it from here
    transformers.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert trainer.state.global_step == steps
    return trainer


def reference_sam(model: nn.Module, decayed, rho: float = RHO) -> SAM:
    """SAM around AdamW with the Trainer's settings written out: weight decay on ``decayed`` parameters only."""
    params = list(model.named_parameters())
    groups = [{"params": [p for n, p in params if decayed(n, p)], "weight_decay": DECAY},
              {"params": [p for n, p in params if not decayed(n, p)], "weight_decay": 0.0}]
    return SAM(groups, torch.optim.AdamW, rho=rho, lr=LR, betas=(0.9, 0.999), eps=1e-8)


def linear_schedule(opt: SAM, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate falling linearly to zero over ``steps`` updates, by hand."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, (steps - t) / steps))


def bn_rows(n: int, dtype: torch.dtype) -> list[dict]:
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(n, 6, generator=gen) * 2 + 1).to(dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def stacked(rows: list[dict], start: int, size: int, key: str) -> torch.Tensor:
    return torch.stack([row[key] for row in rows[start : start + size]])


def micro_batches(rows: list[dict], step: int, batch: int, accumulate: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (x, y) micro-batches of update ``step``, in the Trainer's sequential order."""
    starts = [(step * accumulate + k) * batch for k in range(accumulate)]
    return [(stacked(rows, i, batch, "x"), stacked(rows, i, batch, "labels")) for i in starts]


def max_abs_diff(a: nn.Module, b: nn.Module, suffixes: tuple[str, ...] | None = None) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if (suffixes is None and k in dict(a.named_parameters())) or
            (suffixes is not None and k.endswith(suffixes))]
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in keys)


def test_gradient_accumulation_with_batchnorm_in_float64(tmp_path):
    steps, batch, accumulate = 4, 8, 2
    rows = bn_rows(steps * batch * accumulate, torch.float64)
    trainer = train(tmp_path, BNClassifier().double(), rows, batch=batch, accumulate=accumulate, steps=steps)
    trained = trainer.model
    assert trainer.lr_scheduler.get_last_lr() == [0.0, 0.0]  # the Trainer's linear schedule ran to its end

    not_bias = lambda name, p: not name.endswith("bias")  # noqa: E731 - the Trainer decays all but biases here
    by_sam_update, by_hand = BNClassifier().double(), BNClassifier().double()
    opt_u, opt_h = reference_sam(by_sam_update, not_bias), reference_sam(by_hand, not_bias)
    sched_u, sched_h = linear_schedule(opt_u, steps), linear_schedule(opt_h, steps)
    for step in range(steps):
        pieces = micro_batches(rows, step, batch, accumulate)
        sam_update(by_sam_update.body, F.cross_entropy, pieces, None, opt_u)
        # by hand: each clean micro-batch moves the running statistics (as in any Trainer), no perturbed one does
        for x, y in pieces:
            (F.cross_entropy(by_hand.body(x), y) / accumulate).backward()
        opt_h.first_step(zero_grad=True)
        with frozen_bn_stats(by_hand):
            for x, y in pieces:
                (F.cross_entropy(by_hand.body(x), y) / accumulate).backward()
        opt_h.second_step(zero_grad=True)
        sched_u.step()
        sched_h.step()
    assert max_abs_diff(trained, by_sam_update) == 0.0
    assert max_abs_diff(trained, by_hand) == 0.0
    assert max_abs_diff(trained, by_hand, ("running_mean", "running_var", "num_batches_tracked")) == 0.0
    assert trained.body[1].num_batches_tracked.item() == steps * accumulate
    assert max_abs_diff(trained, BNClassifier().double()) > 1e-3  # it trained


def test_tiny_bert_built_locally_in_float64(tmp_path):
    steps, batch = 3, 8
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(1, 40, (steps * batch, 10), generator=gen)
    labels = torch.randint(0, 3, (steps * batch,), generator=gen)
    rows = [{"input_ids": ids[i], "labels": labels[i]} for i in range(len(ids))]
    trained = train(tmp_path, tiny_bert().double(), rows, batch=batch, accumulate=1, steps=steps).model

    reference = Logits(tiny_bert().double())
    # the Trainer decays every weight but biases and LayerNorm parameters: here exactly the tensors of dim > 1
    opt = reference_sam(reference, lambda name, p: p.dim() > 1)
    sched = linear_schedule(opt, steps)
    for step in range(steps):
        part = slice(step * batch, (step + 1) * batch)
        sam_update(reference, F.cross_entropy, ids[part], labels[part], opt)
        sched.step()
    assert max_abs_diff(trained, reference.bert) == 0.0


def test_bf16_through_accelerate_equals_sam_update_under_autocast(tmp_path):
    steps, batch, accumulate = 3, 8, 2
    rows = bn_rows(steps * batch * accumulate, torch.float32)
    trainer = train(tmp_path, BNClassifier(), rows, batch=batch, accumulate=accumulate, steps=steps, bf16=True)
    assert trainer.accelerator.mixed_precision == "bf16"
    trained = trainer.model

    reference = BNClassifier()
    opt = reference_sam(reference, lambda name, p: not name.endswith("bias"))
    sched = linear_schedule(opt, steps)
    for step in range(steps):
        pieces = micro_batches(rows, step, batch, accumulate)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sam_update(reference.body, F.cross_entropy, pieces, None, opt)
        sched.step()
    # Accelerate autocasts each forward pass (the loss inside it) and runs backward outside; the same kernels run
    # on the same numbers, so no tolerance is needed.
    assert max_abs_diff(trained, reference) == 0.0
    assert all(p.dtype == torch.float32 for p in trained.parameters())


def test_a_grad_scaler_through_accelerate_equals_sam_update_with_a_scaler_overflows_included(tmp_path, monkeypatch):
    """fp16 training's control flow: on a CPU Accelerate makes no GradScaler (fp16 needs a GPU), so the test hands
    the Trainer's accelerator a CPU one. The scale starts so high, and ρ is so large, that updates overflow in the
    clean pass and in the perturbed pass: those are skipped, the scale backs off and the scheduler does not step."""
    steps, batch, accumulate, rho = 10, 8, 2, 10.0
    rows = bn_rows(steps * batch * accumulate, torch.float32)

    def make_scaler():
        return torch.amp.GradScaler("cpu", init_scale=2.0**124, growth_interval=1)

    counts = {"clean overflow": 0, "base step": 0}
    skip_update, step = SAM.skip_update, SAM.step

    def counting_skip(self, *args, **kwargs):
        counts["clean overflow"] += 1
        return skip_update(self, *args, **kwargs)

    def counting_step(self, *args, **kwargs):
        counts["base step"] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(SAM, "skip_update", counting_skip)
    monkeypatch.setattr(SAM, "step", counting_step)
    factor = 64.0  # gradients large enough to overflow at the first scales
    scaler = make_scaler()
    trained = train(tmp_path, BNClassifier(factor), rows, batch=batch, accumulate=accumulate, steps=steps,
                    scaler=scaler, rho=rho).model
    perturbed_overflows = steps - counts["clean overflow"] - counts["base step"]
    assert counts["clean overflow"] >= 1 and perturbed_overflows >= 1 and counts["base step"] >= 1, counts
    monkeypatch.undo()

    reference = BNClassifier()
    opt = reference_sam(reference, lambda name, p: not name.endswith("bias"), rho=rho)
    sched = linear_schedule(opt, steps)
    ref_scaler = make_scaler()
    skipped = 0
    for step in range(steps):
        pieces = micro_batches(rows, step, batch, accumulate)
        before = ref_scaler.get_scale()
        sam_update(reference.body, lambda out, y: F.cross_entropy(out, y) * factor, pieces, None, opt,
                   scaler=ref_scaler)
        if ref_scaler.get_scale() < before:
            skipped += 1
        else:
            sched.step()
    assert skipped == steps - counts["base step"]
    assert scaler.get_scale() == ref_scaler.get_scale()
    assert max_abs_diff(trained, reference) == 0.0


def test_a_sam_passed_in_is_used_as_given_with_the_trainers_scheduler(tmp_path):
    steps, batch = 3, 8
    rows = bn_rows(steps * batch, torch.float64)
    model = BNClassifier().double()
    given = SAM(model.parameters(), torch.optim.SGD, rho=0.3, lr=0.05, momentum=0.9, model=model)
    trainer = train(tmp_path, model, rows, batch=batch, accumulate=1, steps=steps, optimizer=given)
    assert trainer.optimizer.optimizer is given

    reference = BNClassifier().double()
    opt = SAM(reference.parameters(), torch.optim.SGD, rho=0.3, lr=0.05, momentum=0.9)
    sched = linear_schedule(opt, steps)
    for step in range(steps):
        sam_update(reference.body, F.cross_entropy, stacked(rows, step * batch, batch, "x"),
                   stacked(rows, step * batch, batch, "labels"), opt)
        sched.step()
    assert max_abs_diff(trainer.model, reference) == 0.0
    assert max_abs_diff(trainer.model, reference, ("running_mean", "running_var", "num_batches_tracked")) == 0.0


def test_an_optimizer_that_is_not_sam_is_refused(tmp_path):
    model = BNClassifier()
    args = transformers.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1,
                                          remove_unused_columns=False, per_device_train_batch_size=4)
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SAMTrainer(model=model, args=args, train_dataset=bn_rows(8, torch.float32),
                         optimizers=(plain, None))
    with pytest.raises(ValueError, match="SAMTrainer needs a samscale SAM optimizer, got SGD"):
        trainer.train()
