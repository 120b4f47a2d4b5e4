"""Image folders feeding a GPU: decoding threads and prefetch change nothing but speed, pinned batches, and under
several processes each rank decodes only its own slice of every batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samscale.data import ImageFolderLoader, load_dataset
from samscale.optim.sync import rank_slice
from samscale.spec.run import build_spec

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def root(tmp_path):
    """train/ and val/ with 7 and 2 JPEG images of each of 2 classes, of varied sizes."""
    rng = np.random.default_rng(0)
    for part, count in (("train", 7), ("val", 2)):
        for name in ("a", "b"):
            folder = tmp_path / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (18 + i, 22 - i, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return tmp_path


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_threads_and_prefetch_give_the_sequential_batches(root):
    train = load_dataset("imagenet", root=str(root), val_size=0, image_size=12, resize_size=14).train
    reference = _batches(ImageFolderLoader(train, 4, shuffle=True, generator=torch.Generator().manual_seed(3)))
    for workers, prefetch in ((1, 0), (3, 1), (4, 5)):
        got = _batches(ImageFolderLoader(train, 4, shuffle=True, generator=torch.Generator().manual_seed(3),
                                         num_workers=workers, prefetch=prefetch))
        assert len(got) == len(reference) == 4
        for (x, y), (x_ref, y_ref) in zip(got, reference):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_each_rank_decodes_only_its_slice(root, monkeypatch):
    train = load_dataset("imagenet", root=str(root), val_size=0, image_size=12, resize_size=14).train
    whole = _batches(ImageFolderLoader(train, 5, shuffle=True, generator=torch.Generator().manual_seed(1)))
    decoded = []
    real_load = type(train).load
    monkeypatch.setattr(type(train), "load", lambda self, i, u=None: decoded.append(i) or real_load(self, i, u))
    parts = [_batches(ImageFolderLoader(train, 5, shuffle=True, generator=torch.Generator().manual_seed(1),
                                        num_workers=2, shard=(rank, 2))) for rank in range(2)]
    assert len(decoded) == len(train)  # every image decoded once over both ranks, none twice
    for batch, (x, y) in enumerate(whole):
        for rank in range(2):
            x_rank, y_rank = parts[rank][batch]
            assert torch.equal(y_rank, y)  # labels of the whole batch (for the loss and the meters)
            assert torch.equal(x_rank, x[rank_slice(len(y), rank, 2)])
    with pytest.raises(ValueError, match="shard must be"):
        ImageFolderLoader(train, 5, shuffle=False, shard=(2, 2))


def test_batches_land_in_pinned_memory_when_asked(root, monkeypatch):
    pinned = []

    def pin(self):
        pinned.append(tuple(self.shape))
        return self  # a CPU-only torch has no pinned memory; the request is what is checked

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    test = load_dataset("imagenet", root=str(root), val_size=0, image_size=12, resize_size=14).test
    batches = _batches(ImageFolderLoader(test, 3, shuffle=False, pin_memory=True, num_workers=2))
    assert pinned == [(3, 3, 12, 12), (1, 3, 12, 12)]
    assert torch.equal(torch.cat([x for x, _ in batches]),
                       torch.cat([x for x, _ in ImageFolderLoader(test, 3, shuffle=False)]))


def test_the_trainer_gives_a_rank_a_sharded_threaded_loader(root, monkeypatch):
    import samscale.train.loop as loop

    class Rank1Of2:
        rank, world_size, is_main = 1, 2, False

    monkeypatch.setattr(loop.GradientSync, "from_environment", classmethod(lambda cls, mode="global": Rank1Of2()))
    spec = build_spec({"data": {"name": "imagenet", "val_size": 0, "augment": True,
                                "options": {"root": str(root), "image_size": 12, "resize_size": 14}},
                       "model": {"family": "mlp", "size": 0.25}, "train": {"batch_size": 4},
                       "runtime": {"loader_workers": 3, "nproc": 2}})
    run = loop._Run(spec, torch.device("cpu"))
    assert isinstance(run.loader, ImageFolderLoader) and run.streamed
    assert run.loader.shard == (1, 2) and run.loader.num_workers == 3 and run.loader.pin_memory is False
    x, y = next(iter(run.loader))
    assert len(y) == 4 and len(x) == 2  # rank 1 of 2 decoded its 2 of the batch's 4 images


def test_augmentation_copies_to_the_device_once_per_batch_and_without_blocking(monkeypatch):
    import samscale.data.augment as augment

    calls = []

    def record(self, *args, **kwargs):
        calls.append(("to", args, kwargs))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append(("pin",)) or self)
    monkeypatch.setattr(torch.Tensor, "to", record)
    augment.host_to_device(torch.zeros(3), torch.device("cuda"))
    assert calls == [("pin",), ("to", (torch.device("cuda"),), {"non_blocking": True})]
    monkeypatch.undo()

    copies = []
    real = augment.host_to_device
    monkeypatch.setattr(augment, "host_to_device", lambda t, device: copies.append(tuple(t.shape)) or real(t, device))
    meta = torch.device("meta")  # a device other than the generator's, available without a GPU
    flip = augment.PadCropFlip(pad=2, fill=(0.1, 0.2, 0.3))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        out = flip(torch.empty(5, 3, 8, 8, device=meta), generator)
        assert out.shape == (5, 3, 8, 8) and out.is_meta
    assert copies == [(3,), (3, 5), (3, 5), (3, 5)]  # the fill once; offsets and flips in one copy per batch
