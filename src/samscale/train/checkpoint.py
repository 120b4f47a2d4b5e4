"""Atomic, fenced checkpoints that know their origin.

A checkpoint is written to a temporary file and renamed, so a crash never leaves a torn checkpoint; the temporary
name carries its writer's `owner_tag`, so a later sweep can remove one whose writer provably died. With a `Fence`
(the run store's claim of the run) the rename happens only while the writer still holds the run, so a holder that
was taken over (paused past the stale limit, then woken) can never overwrite its successor's checkpoint.

Each checkpoint records its run id, the attempt (claim) that wrote it and the code version; `resume_state` refuses
one written by another code version, so a run is never finished from weights that other code trained.

Checkpoints are read with `torch.load(weights_only=True)`: tensors, numbers, strings and plain containers only, so a
crafted file can never run code. Anything else is refused with a message that names the file.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any, ContextManager, Protocol

import torch

from samscale.errors import ConfigError
from samscale.fileio import write_with
from samscale.version import code_version


class Fence(Protocol):
    """Who may write a run's checkpoint (implemented by the run store's `ClaimFence`)."""

    def attempt(self, run_id: str) -> int | None:
        """The attempt (claim) of `run_id` this writer holds."""

    def hold(self, run_id: str) -> ContextManager[None]:
        """A block that runs only while this writer holds `run_id` (else raises `samscale.errors.ClaimLost`)."""


def origin(run_id: str, fence: Fence | None) -> dict[str, Any]:
    """The origin fields a checkpoint of `run_id` records: attempt (None outside a store) and code version."""
    return {"attempt": None if fence is None else fence.attempt(run_id), "code_version": code_version()}


def save_checkpoint(path: str | Path, state: dict[str, Any], fence: Fence | None = None) -> None:
    """Write `state` to `path` atomically (`samscale.fileio`: owner-tagged tmp file in the same folder, fsync,
    rename); with `fence`, the rename happens inside `fence.hold(state["run_id"])`, and a writer that lost the run
    writes nothing."""
    write_with(path, lambda handle: torch.save(state, handle),
               commit=fence.hold(state["run_id"]) if fence is not None else None)


def resume_state(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at `path` to continue a run from (None when there is none); refused (ConfigError) when another
    code version wrote it."""
    state = load_checkpoint(path)
    if state is not None and state.get("code_version") != code_version():
        raise ConfigError(f"{path} was written by code version {state.get('code_version') or 'unrecorded'}, not by "
                          f"this one ({code_version()}); a run is never continued from weights other code trained: "
                          "delete the checkpoint to train the run anew")
    return state


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
