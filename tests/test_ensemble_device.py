"""The ensemble trainer on a GPU's terms, checked on the CPU: no device-to-host read in a training step (counted
through patched tensor methods, so a sync cannot silently return), one shared device copy of the data, and the
precision settings a pack accepts."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import samscale.train.loop as loop
from samscale.data import Split
from samscale.spec.run import build_spec
from samscale.train.ensemble import _Member, _Pack, unpackable_reason

# Every way a tensor's value reaches the host (each waits for the device's queue on CUDA).
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def reads(monkeypatch):
    """Counts of device-to-host reads per method while the test runs."""
    counts = dict.fromkeys(READS, 0)
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def _pack(config, tmp_path: Path, train_subset: int = 384) -> _Pack:
    """SGD, SAM, USAM and ASAM members (momentum, one Nesterov) of one pack."""
    config = copy.deepcopy(config)
    config["data"]["train_subset"] = train_subset
    optims = [dict(name="sam", rho=0.05), dict(name="usam", rho=0.02), dict(name="asam", rho=0.5),
              dict(name="sgd", nesterov=True)]
    specs = []
    for seed, optim in enumerate(optims):
        tree = copy.deepcopy(config)
        tree["train"]["seed"] = seed
        tree["optim"].update(optim)
        specs.append(build_spec(tree))
    members = [_Member(spec, torch.device("cpu"), tmp_path, lambda event: None, None) for spec in specs]
    return _Pack(members, torch.device("cpu"))


def test_a_training_step_reads_nothing_back_from_the_device(tiny_config, tmp_path, reads):
    pack = _pack(tiny_config, tmp_path)
    batches = [next(iter(m.run.loader)) for m in pack.members]
    xs, ys = torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])
    lrs = torch.full((len(pack.members),), 0.05)
    counts_before = dict(reads)
    before = {n: p.detach().clone() for n, p in pack.params.items()}
    pack.train_step(xs, ys, lrs)
    assert any(not torch.equal(before[n], p) for n, p in pack.params.items())  # the step happened
    assert reads == counts_before, {k: reads[k] - counts_before[k] for k in reads}


def test_an_epochs_reads_do_not_grow_with_its_steps(tiny_config, tmp_path, reads):
    """Reading the epoch's meters back happens once per epoch: an epoch of 6 steps reads as often as one of 2."""
    per_epoch = []
    for subset, folder in ((128, "short"), (384, "long")):
        pack = _pack(tiny_config, tmp_path / folder, train_subset=subset)
        steps = len(pack.members[0].run.loader)
        start = sum(reads.values())
        pack._train_epoch()
        per_epoch.append((steps, sum(reads.values()) - start))
    (short_steps, short_reads), (long_steps, long_reads) = per_epoch
    assert long_steps == 3 * short_steps and long_reads == short_reads


def test_members_share_one_device_copy_of_the_data(tiny_config):
    x, y = torch.randn(6, 3), torch.arange(6)
    split = Split(x, y)
    meta = torch.device("meta")  # a device other than the CPU, available without a GPU
    first, second = loop._split_to(split, meta), loop._split_to(split, meta)
    assert first is second and first.x.is_meta and first.x.shape == (6, 3)
    assert loop._split_to(split, torch.device("cpu")) is split  # already there
    other = Split(x.clone(), y.clone())
    assert loop._split_to(other, meta) is not first  # another split has its own copy
    for i in range(loop._DEVICE_COPIES_KEPT + 2):  # the cache stays bounded
        loop._split_to(Split(x.clone(), y.clone()), meta)
    assert len(loop._DEVICE_COPIES) == loop._DEVICE_COPIES_KEPT


def test_precision_settings_a_pack_accepts(tiny_config):
    for precision in ("highest", "tf32"):
        assert unpackable_reason(build_spec(tiny_config, [f"runtime.precision={precision}"])) is None
    for precision in ("bf16", "fp16"):
        reason = unpackable_reason(build_spec(tiny_config, [f"runtime.precision={precision}"]))
        assert reason == f"{precision} autocast (runtime.precision={precision})"
    assert unpackable_reason(build_spec(tiny_config, ["runtime.cudnn_benchmark=false", "runtime.loader_workers=2",
                                                      "runtime.analysis_precision=tf32"])) is None
