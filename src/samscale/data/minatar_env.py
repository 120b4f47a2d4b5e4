"""MinAtar games (Young & Tian 2019) as seeded environments with tensor observations: the offline stand-in for Atari.

MinAtar re-implements five Atari 2600 games (Asterix, Breakout, Freeway, Seaquest, Space Invaders) on a 10×10 grid
with one binary channel per object type, keeping Atari's 6-action interface and sticky actions (repeat the previous
action with probability 0.1). It installs from PyPI without ROMs and runs a DQN in minutes on a CPU: the stand-in
for Atari at the cpu and smoke budgets (the paper budget plays ALE Atari, `samscale.data.atari_env`). Install with
`pip install 'samscale[rl]'`.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from torch import Tensor

from samscale.data.errors import DatasetUnavailable
from samscale.spec.run import MINATAR_GAMES

NUM_ACTIONS = 6
"""Every MinAtar game exposes Atari's 6 actions (no-op, left, up, right, down, fire)."""


def minatar_version() -> str:
    """The installed minatar package version; DatasetUnavailable with the install command if it is missing."""
    try:
        return version("minatar")
    except PackageNotFoundError:
        raise DatasetUnavailable("MinAtar is not installed: pip install minatar (or pip install 'samscale[rl]')") \
            from None


class MinAtarEnv:
    """One MinAtar game whose randomness (sticky actions, game dynamics) comes only from `seed`.

    `reset()` and `step(action)` return observations as float32 tensors of shape (channels, 10, 10).
    """

    def __init__(self, game: str, *, seed: int, sticky_action_prob: float = 0.1) -> None:
        if game not in MINATAR_GAMES:
            raise ValueError(f"unknown MinAtar game {game!r}; valid: {', '.join(MINATAR_GAMES)}")
        minatar_version()
        from minatar import Environment

        self.game = game
        self._env = Environment(game, sticky_action_prob=sticky_action_prob)
        self._env.seed(int(seed) % 2**32)

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of an observation."""
        height, width, channels = self._env.state_shape()
        return channels, height, width

    def observation(self) -> Tensor:
        """The current board as a float32 (channels, 10, 10) tensor of 0s and 1s."""
        return torch.from_numpy(np.ascontiguousarray(self._env.state().transpose(2, 0, 1), dtype=np.float32))

    def reset(self) -> Tensor:
        """Start a new episode and return its first observation."""
        self._env.reset()
        return self.observation()

    def step(self, action: int) -> tuple[Tensor, float, bool]:
        """Take `action` (0–5): (next observation, reward, episode ended)."""
        if not 0 <= action < NUM_ACTIONS:
            raise ValueError(f"action must be in 0..{NUM_ACTIONS - 1}, got {action}")
        reward, terminal = self._env.act(int(action))
        return self.observation(), float(reward), bool(terminal)
