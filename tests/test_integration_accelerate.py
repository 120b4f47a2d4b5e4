"""SAM in a Hugging Face Accelerate loop (the README's): ``accelerator.backward`` for both passes, ``first_step`` and
``second_step`` with Accelerate's scaler. One process in float64 and in bf16, and DDP over 2 processes on gloo,
against ``sam_update`` in one process. DDP averages the gradient inside every backward, so the clean gradient that
``first_step`` sees is already the global one: global SAM needs no GradientSync here."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, sam_update

accelerate = pytest.importorskip("accelerate")

WORLD, STEPS, BATCH = 2, 4, 16


def make_model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 3)).to(dtype)


def make_sam(model: nn.Module) -> SAM:
    return SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9, weight_decay=1e-3, model=model)


def batches(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [((torch.randn(BATCH, 6, generator=gen) * 2 + 1).to(dtype), torch.randint(0, 3, (BATCH,), generator=gen))
            for _ in range(STEPS)]


def accelerate_loop(accelerator, model: nn.Module, data) -> nn.Module:
    """The README's loop, line for line."""
    sam = make_sam(model)  # given the model: BatchNorm statistics stay out of the perturbed pass
    model, optimizer = accelerator.prepare(model, sam)
    for x, y in data:
        accelerator.backward(F.cross_entropy(model(x), y))
        sam.first_step(zero_grad=True, scaler=accelerator.scaler)  # ascend to w + ε (the global ε under DDP)
        accelerator.backward(F.cross_entropy(model(x), y))
        sam.second_step(zero_grad=True, scaler=accelerator.scaler)  # back to w, base step with the SAM gradient
    return accelerator.unwrap_model(model)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_abs_diff(a: dict, b: dict, buffers: bool) -> float:
    keys = [k for k in a if k.endswith(("running_mean", "running_var")) == buffers and "num_batches" not in k]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def reference(dtype: torch.dtype, data, pieces: int = 1, autocast: bool = False) -> dict[str, torch.Tensor]:
    model = make_model(dtype)
    opt = make_sam(model)
    for x, y in data:
        split = list(zip(x.chunk(pieces), y.chunk(pieces)))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            sam_update(model, F.cross_entropy, split, None, opt)
    return state(model)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_one_process_equals_sam_update(precision):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # each test its own mixed-precision setting
    dtype = torch.float64 if precision == "no" else torch.float32
    data = batches(dtype)
    accelerator = accelerate.Accelerator(cpu=True, mixed_precision=precision)
    trained = state(accelerate_loop(accelerator, make_model(dtype), data))
    expected = reference(dtype, data, autocast=precision == "bf16")
    # the same kernels on the same numbers (autocast per forward here, around the whole update there): bitwise
    assert max_abs_diff(trained, expected, buffers=False) == 0.0
    assert max_abs_diff(trained, expected, buffers=True) == 0.0
    assert trained["1.num_batches_tracked"].item() == STEPS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD),
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    accelerator = accelerate.Accelerator(cpu=True)
    assert accelerator.num_processes == WORLD and torch.distributed.get_backend() == "gloo"
    half = BATCH // WORLD
    local = [(x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half])
             for x, y in batches(torch.float64)]
    model = accelerate_loop(accelerator, make_model(torch.float64), local)
    torch.save(state(model), Path(out, f"rank{rank}.pt"))
    accelerator.end_training()


def test_ddp_on_two_processes_is_global_sam(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    # one process, the global batch in two pieces: BatchNorm normalizes each process's half with its own statistics
    expected = reference(torch.float64, batches(torch.float64), pieces=WORLD)
    for rank, trained in enumerate(ranks):
        assert max_abs_diff(trained, expected, buffers=False) <= 1e-12, rank
    start = state(make_model(torch.float64))
    assert max_abs_diff(expected, start, buffers=False) > 1e-3  # it trained
