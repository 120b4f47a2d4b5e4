"""Atomic checkpoints: written to a temporary file and renamed, so a crash never leaves a torn checkpoint.

Checkpoints are read with `torch.load(weights_only=True)`: tensors, numbers, strings and plain containers only, so a
crafted file can never run code. Anything else is refused with a message that names the file.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from samscale.errors import ConfigError
from samscale.fileio import write_with


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically (tmp file in the same folder, fsync, rename)."""
    write_with(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Read a checkpoint written by `save_checkpoint`, or None when there is none; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(f"{path}: refused to load; it holds objects other than tensors and plain data, which "
                          f"could run code ({_refusal_reason(err)})") from None
    except Exception as err:  # torch raises many kinds (KeyError, RuntimeError, EOFError, ...) on a damaged file
        detail = f": {str(err).splitlines()[0]}" if str(err).strip() else ""
        raise ConfigError(f"{path} is not a readable checkpoint ({type(err).__name__}{detail})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} is not a samscale checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def _refusal_reason(err: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only refusal that says what was refused (e.g. 'unsupported GLOBAL posix.system')."""
    paragraphs = [part.strip() for part in str(err).split("\n\n") if part.strip()]
    boilerplate = ("Weights only load failed", "Check the documentation")
    return next((part for part in paragraphs if not part.startswith(boilerplate)), paragraphs[0] if paragraphs else "")
