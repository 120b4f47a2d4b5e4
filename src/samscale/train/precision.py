"""The precision policy of a run: one setting (`runtime.precision`) for TF32 and autocast, and what a run records.

| policy    | float32 matmuls and convolutions on CUDA | training steps          | gradient scaling |
|-----------|------------------------------------------|-------------------------|------------------|
| `highest` | full fp32 (TF32 off)                      | fp32                    | none             |
| `tf32`    | TF32 (10-bit mantissa inputs)            | fp32                    | none             |
| `bf16`    | TF32                                     | bf16 autocast           | none             |
| `fp16`    | TF32                                     | fp16 autocast           | `GradScaler`     |

`highest` is the default: on a CPU every policy but `bf16`/`fp16` computes the same numbers, and torch's own CUDA
default (TF32 convolutions, fp32 matmuls) is neither of the first two. Autocast covers the training steps; evaluation
runs in fp32 under the policy's TF32 setting. The Hessian analysis has its own setting,
`runtime.analysis_precision`, `highest` by default: Hessian-vector products through TF32 convolutions carry about
1e-3 relative error, far above the 1e-5 the analyses are tested to. `cudnn_benchmark` (autotuned convolution
algorithms, CUDA only) is set with the policy, and every setting is restored when the block ends.

Every run records where and how it computed (`compute_record`): the device's name, the policy and torch's version,
beside its code version. The policy is not part of a run's identity, like the device and the thread count: it
changes how the same experiment is computed, not which experiment it is, and reports show it so that a reader sees
which runs were computed how.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from samscale.spec.run import PRECISIONS

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _check(policy: str) -> str:
    if policy not in PRECISIONS:
        raise ValueError(f"unknown precision {policy!r}; valid: {', '.join(PRECISIONS)}")
    return policy


def _tf32_flags() -> list[tuple[Any, str, Any, Any]]:
    """(object, attribute, value with TF32 off, value with TF32 on) for every TF32 switch this torch has."""
    cudnn = torch.backends.cudnn
    if hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(cudnn, "conv"):
        return [(torch.backends.cuda.matmul, "fp32_precision", "ieee", "tf32"),
                (cudnn.conv, "fp32_precision", "ieee", "tf32"), (cudnn.rnn, "fp32_precision", "ieee", "tf32")]
    return [(torch.backends.cuda.matmul, "allow_tf32", False, True), (cudnn, "allow_tf32", False, True)]


@contextlib.contextmanager
def precision_policy(policy: str, *, cudnn_benchmark: bool = False) -> Iterator[None]:
    """Set TF32 for `policy` (and cuDNN autotuning) inside the block; restore torch's settings afterwards."""
    tf32 = _check(policy) != "highest"
    flags = _tf32_flags()
    saved = [getattr(obj, name) for obj, name, _, _ in flags]
    benchmark = torch.backends.cudnn.benchmark
    try:
        for obj, name, off, on in flags:
            setattr(obj, name, on if tf32 else off)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        yield
    finally:
        for (obj, name, _, _), value in zip(flags, saved):
            setattr(obj, name, value)
        torch.backends.cudnn.benchmark = benchmark


def autocast(policy: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a training step under `policy` (disabled for `highest` and `tf32`)."""
    dtype = AUTOCAST_DTYPES.get(_check(policy))
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(policy: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for `fp16` (fp16 gradients underflow without one), else None."""
    return torch.amp.GradScaler(device.type) if _check(policy) == "fp16" else None


def device_name(device: torch.device) -> str:
    """The device's name as its vendor gives it (e.g. 'NVIDIA H100 80GB HBM3'), or 'cpu'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def compute_record(device: torch.device, policy: str) -> dict[str, str]:
    """What a run records about how it computed: device name, precision policy, torch version."""
    return {"device_name": device_name(device), "precision": _check(policy), "torch_version": torch.__version__}
