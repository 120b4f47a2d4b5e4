"""SAM where other tools drive it: closures (plain and Lightning-style), LR schedulers on either object,
torch.compile'd models, and state_dict checkpoints on disk read back with weights_only=True."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, sam_update


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))


def data(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)) for _ in range(steps)]


def sam(model: nn.Module) -> SAM:
    return SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9, weight_decay=5e-4)


def assert_equal(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def plain_closure(model, opt, x, y):
    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def lightning_closure(model, opt, x, y):
    """Like Lightning's automatic optimization: the closure zeroes the gradients itself, runs the training step and
    backward, and returns the detached loss; it is passed as a keyword."""
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return closure


@pytest.mark.parametrize("make_closure", [plain_closure, lightning_closure])
@pytest.mark.parametrize("on_base", [False, True])
def test_step_with_a_closure_and_a_scheduler_on_either_object_equals_sam_update(make_closure, on_base):
    a, b = mlp(), mlp()
    opt_a, opt_b = sam(a), sam(b)
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a.base_optimizer if on_base else opt_a, step_size=2, gamma=0.5)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=2, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
        for x, y in data(5):
            loss = opt_a.step(closure=make_closure(a, opt_a, x, y))
            clean, _ = sam_update(b, F.cross_entropy, x, y, opt_b)
            assert torch.equal(loss.detach(), clean)
            sched_a.step()
            sched_b.step()
    assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
    assert_equal(a, b)


@pytest.mark.parametrize(
    "backend",
    # aot_eager: dynamo's capture and AOTAutograd, what SAM's passes interact with, in seconds; inductor adds
    # C++ code generation (minutes on a busy CPU). Conv nets crash CPU inductor with this torch build: MLP only.
    ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)],
)
def test_compiled_mlp_matches_eager(backend):
    compiled_model, eager = mlp(), mlp()
    compiled = torch.compile(compiled_model, backend=backend)
    opt_c, opt_e = sam(compiled_model), sam(eager)
    for x, y in data(3):
        loss_c, out_c = sam_update(compiled, F.cross_entropy, x, y, opt_c, m=8)
        loss_e, out_e = sam_update(eager, F.cross_entropy, x, y, opt_e, m=8)
        torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(compiled_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(compiled_model[0].weight, mlp()[0].weight)


def test_state_dict_through_a_checkpoint_file_resumes_bit_identically(tmp_path):
    steps = data(6, seed=3)
    model = mlp()
    opt = sam(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def train(m, o, s, sch, batches):
        for x, y in batches:
            sam_update(m, F.cross_entropy, x, y, o, scaler=s)
            sch.step()

    train(model, opt, scaler, scheduler, steps[:3])
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "scheduler": scheduler.state_dict()}, tmp_path / "ckpt.pt")
    train(model, opt, scaler, scheduler, steps[3:])

    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # plain tensors and containers only
    fresh = mlp(seed=7)
    fresh.load_state_dict(state["model"])
    fresh_opt = SAM(fresh.parameters(), torch.optim.SGD, rho=0.9, lr=1.0, momentum=0.9)
    fresh_opt.load_state_dict(state["optimizer"])
    fresh_scaler = torch.amp.GradScaler("cpu")
    fresh_scaler.load_state_dict(state["scaler"])
    fresh_scheduler = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=2, gamma=0.5)
    fresh_scheduler.load_state_dict(state["scheduler"])
    train(fresh, fresh_opt, fresh_scaler, fresh_scheduler, steps[3:])
    assert_equal(model, fresh)
    assert fresh_scaler.get_scale() == scaler.get_scale() and fresh_opt.param_groups[0]["rho"] == 0.1
