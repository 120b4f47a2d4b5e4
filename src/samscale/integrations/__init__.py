"""SAM inside training frameworks that own the loop.

PyTorch Lightning and Accelerate need no code here: ``SAM(..., model=module)`` keeps BatchNorm statistics out of the
perturbed pass, Lightning's ``optimizer.step(closure)`` runs both passes, and ``SAM.step()`` without a closure
finishes an update begun by ``first_step`` (see the README). The Hugging Face ``Trainer`` calls
``optimizer.step()`` after its own backward passes, so it gets a subclass, ``SAMTrainer`` (needs the
``transformers`` extra; importing this package does not import transformers).
"""
from __future__ import annotations

from typing import Any

__all__ = ["SAMTrainer"]


def __getattr__(name: str) -> Any:
    if name == "SAMTrainer":
        try:
            from samscale.integrations.huggingface import SAMTrainer
        except ImportError as error:
            raise ImportError(
                f"SAMTrainer needs Hugging Face transformers and accelerate ({error}); install them with "
                "pip install 'samscale[transformers]'"
            ) from error
        return SAMTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
