"""A distributed SAM step reads nothing more back to the host than a one-process step: the trainer knows each
process's share of the batch, so no all-reduce and no `.item()` measure it (counted with a patched `.item`)."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import samscale.train.loop as loop
from samscale.optim import SAM, sam_update
from samscale.optim.sync import GradientSync
from samscale.spec.run import build_spec


@pytest.fixture
def group(tmp_path):
    """A one-process gloo group: enough for GradientSync's collectives, in this process."""
    dist.init_process_group("gloo", init_method=(tmp_path / "rendezvous").as_uri(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture
def items(monkeypatch):
    count = [0]
    original = torch.Tensor.item

    def counted(self):
        count[0] += 1
        return original(self)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    return count


def _step(sync, share):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    sam_update(model, F.cross_entropy, x, y, opt, sync=sync, share=share)
    return [p.detach().clone() for p in model.parameters()]


def test_a_known_share_saves_the_reads(group, items):
    alone = _step(None, None)
    single = items[0]
    items[0] = 0
    measured = _step(GradientSync("global"), None)  # the share measured: one all-reduce, one read
    assert items[0] == single + 1
    items[0] = 0
    given = _step(GradientSync("global"), 1.0)
    assert items[0] == single
    for a, b, c in zip(alone, measured, given):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_the_trainers_distributed_step_reads_as_a_one_process_step(group, items, tiny_config, monkeypatch):
    spec = build_spec(tiny_config, ["optim.name=sam"])
    plain = loop._Run(spec, torch.device("cpu"))
    x, y = next(iter(plain.loader))
    items[0] = 0
    sam_update(plain.forward, plain.loss_fn, x, y, plain.optimizer)
    single = items[0]
    monkeypatch.setattr(loop.GradientSync, "from_environment", classmethod(lambda cls, mode="global": cls(mode)))
    synced = loop._Run(spec, torch.device("cpu"))
    items[0] = 0
    synced._distributed_step(x, y, loop._autocast(spec, torch.device("cpu")))
    assert items[0] == single
