"""A DQN replay buffer that stores each frame once (uint8), rebuilds stacked observations on sampling, and saves
itself by appending chunks instead of rewriting everything.

Layout: a ring of `capacity` slots. A slot holds one frame, the action and (unclipped-or-clipped, as given) reward
that led to it, whether that step ended the episode for bootstrapping, and the absolute index of the slot that began
its episode. An episode begins with a slot that no transition led to (`begin`, action −1); every environment step
then appends one slot (`append`). The observation ending at slot j is the stack of the `history` frames j − history
+ 1 … j, where frames before the episode's first are replaced by that first frame (as `FrameStack` shows the agent
at a reset). A transition (s, a, r, s', done) is a slot j with a ≥ 0: s ends at j − 1 and s' at j. Stacked
observations are never stored: Atari's 4 × 84 × 84 observations cost one 84 × 84 frame per step, not eight. A
transition is sampled only while every frame of its s is still in the ring.

Persistence: slot k (counted from the start of the run) lives in chunk file k // chunk_size of a folder. `save`
writes only the chunks that received slots since the last save (the newest partially filled chunk again, whole
chunks never), and returns the small dict a checkpoint keeps; `prune` then deletes chunks whose slots have all been
overwritten in the ring. Chunk files are written atomically and are immutable once full, so a crash between `save`
and the checkpoint's rename leaves the previous checkpoint's chunks readable. The folder holds at most
`capacity + chunk_size` slots, about (1 + 1/CHUNKS) × the buffer's stored size.
"""
from __future__ import annotations

import math
import shutil
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from samscale.train.checkpoint import load_checkpoint, save_checkpoint

CHUNKS = 32
"""Chunks per capacity: the folder's slack is one chunk, 1/CHUNKS of the buffer."""
FIELDS = ("frames", "action", "reward", "done", "start")


class FrameStack:
    """The agent's view: the last `history` frames, concatenated along channels; a reset repeats the first frame."""

    def __init__(self, history: int) -> None:
        self.history = history
        self._frames: deque[Tensor] = deque(maxlen=history)

    def reset(self, frame: Tensor) -> None:
        """Start an episode at `frame`."""
        self._frames.clear()
        self._frames.extend([frame] * self.history)

    def push(self, frame: Tensor) -> None:
        """The frame after one step."""
        self._frames.append(frame)

    def observation(self) -> Tensor:
        """(history × C, H, W) uint8: oldest frame first."""
        return torch.cat(list(self._frames), dim=0)


class FrameReplay:
    """Ring buffer of frames and the transitions between them (see the module docstring)."""

    def __init__(self, capacity: int, frame_shape: tuple[int, ...], history: int) -> None:
        if capacity <= history:
            raise ValueError(f"replay capacity {capacity} must exceed the frame history {history}")
        self.capacity, self.history, self.frame_shape = capacity, history, tuple(frame_shape)
        self.frames = torch.zeros((capacity, *frame_shape), dtype=torch.uint8)
        self.action = torch.full((capacity,), -1, dtype=torch.int64)
        self.reward = torch.zeros(capacity, dtype=torch.float32)
        self.done = torch.zeros(capacity, dtype=torch.bool)
        self.start = torch.zeros(capacity, dtype=torch.int64)
        self.total = 0  # slots written since the run began
        self.saved = 0  # slots already in chunk files
        self.chunk_size = max(1, math.ceil(capacity / CHUNKS))

    def __len__(self) -> int:
        """Slots held (frames, including the first frame of each episode)."""
        return min(self.total, self.capacity)

    @property
    def oldest(self) -> int:
        """Absolute index of the oldest slot still held."""
        return self.total - len(self)

    def stored_bytes(self) -> int:
        """Bytes of the slots held, frames and transition fields together."""
        per_slot = sum(getattr(self, name)[0].nbytes for name in FIELDS)
        return len(self) * per_slot

    def _write(self, frame: Tensor, action: int, reward: float, done: bool, start: int) -> None:
        i = self.total % self.capacity
        self.frames[i] = frame
        self.action[i], self.reward[i], self.done[i], self.start[i] = action, reward, done, start
        self.total += 1

    def begin(self, frame: Tensor) -> None:
        """The first frame of an episode (no transition leads to it)."""
        self._write(frame, -1, 0.0, False, self.total)

    def append(self, action: int, reward: float, frame: Tensor, done: bool) -> None:
        """One step of the current episode: `action` earned `reward` and led to `frame`; `done` stops bootstrapping."""
        if self.total == 0:
            raise ValueError("append before begin: an episode starts with its first frame")
        self._write(frame, action, reward, done, int(self.start[(self.total - 1) % self.capacity]))

    def stacks(self, end: Tensor) -> Tensor:
        """Observations ending at absolute slots `end` (B,): (B, history × C, H, W) uint8."""
        start = self.start[end % self.capacity]
        offsets = torch.arange(self.history - 1, -1, -1)
        index = torch.maximum(end[:, None] - offsets, start[:, None]) % self.capacity
        return self.frames[index].flatten(1, 2)

    def _sampleable(self, slot: Tensor) -> Tensor:
        start = self.start[slot % self.capacity]
        return (self.action[slot % self.capacity] >= 0) & (torch.maximum(slot - self.history, start) >= self.oldest)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        """`batch_size` transitions drawn uniformly (with replacement) among the sampleable ones:
        (s, a, r, s', done) with uint8 observations. Draws are redrawn until enough are sampleable."""
        chosen: list[Tensor] = []
        needed = batch_size
        for _ in range(1000):
            slot = self.oldest + torch.randint(len(self), (needed,), generator=generator)
            slot = slot[self._sampleable(slot)]
            chosen.append(slot)
            needed -= len(slot)
            if needed <= 0:
                break
        else:
            raise ValueError(f"the replay buffer holds {len(self)} slots but almost no sampleable transition")
        slot = torch.cat(chosen)[:batch_size]
        i = slot % self.capacity
        return self.stacks(slot - 1), self.action[i], self.reward[i], self.stacks(slot), self.done[i].float()

    # -- persistence -----------------------------------------------------------------------------------------
    def _chunk_file(self, folder: Path, chunk: int) -> Path:
        return folder / f"{chunk:09d}.pt"

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write the chunks that changed since the last save; returns what a checkpoint must keep."""
        folder = Path(folder)
        first = max(self.saved, self.oldest) // self.chunk_size
        for chunk in range(first, math.ceil(self.total / self.chunk_size)):
            lo = max(chunk * self.chunk_size, self.oldest)
            hi = min((chunk + 1) * self.chunk_size, self.total)
            i = torch.arange(lo, hi) % self.capacity
            save_checkpoint(self._chunk_file(folder, chunk),
                            {"first": lo, **{name: getattr(self, name)[i].clone() for name in FIELDS}})
        self.saved = self.total
        return {"total": self.total, "capacity": self.capacity, "history": self.history,
                "frame_shape": list(self.frame_shape), "chunk_size": self.chunk_size}

    def prune(self, folder: str | Path) -> None:
        """Delete chunk files whose slots have all left the ring (call after the checkpoint that needs none)."""
        for path in Path(folder).glob("*.pt"):
            if path.stem.isdigit() and (int(path.stem) + 1) * self.chunk_size <= self.oldest:
                path.unlink(missing_ok=True)

    def restore(self, folder: str | Path, meta: dict[str, Any]) -> None:
        """Load the slots a checkpoint's `meta` (from `save`) names from `folder`."""
        folder = Path(folder)
        expected = {"capacity": self.capacity, "history": self.history, "frame_shape": list(self.frame_shape),
                    "chunk_size": self.chunk_size}
        found = {key: meta.get(key) for key in expected}
        if found != expected:
            raise ValueError(f"replay buffer checkpoint {found} does not fit this buffer {expected}")
        total = int(meta["total"])
        self.total = total
        oldest = self.oldest
        for chunk in range(oldest // self.chunk_size, math.ceil(total / self.chunk_size)):
            path = self._chunk_file(folder, chunk)
            state = load_checkpoint(path)
            lo, hi = max(chunk * self.chunk_size, oldest), min((chunk + 1) * self.chunk_size, total)
            if state is None:
                raise ValueError(f"replay chunk {path} is missing (slots {lo}–{hi - 1} of the checkpoint)")
            first = int(state.get("first", -1))
            rows = [state.get(name) for name in FIELDS]
            if first > lo or any(not isinstance(t, Tensor) or t.shape[0] < hi - first for t in rows) \
                    or tuple(state["frames"].shape[1:]) != self.frame_shape:
                raise ValueError(f"replay chunk {path} does not hold slots {lo}–{hi - 1} of frames "
                                 f"{self.frame_shape}")
            i = torch.arange(lo, hi) % self.capacity
            for name, rows_of in zip(FIELDS, rows):
                getattr(self, name)[i] = rows_of[lo - first: hi - first].to(getattr(self, name).dtype)
        self.saved = total

    @staticmethod
    def clear(folder: str | Path) -> None:
        """Remove a replay folder (a run starting afresh, or finished without its optimizer state)."""
        shutil.rmtree(folder, ignore_errors=True)
