"""Atari 2600 games through the Arcade Learning Environment (ale-py, whose wheel ships the ROMs), preprocessed as in
Nature DQN (Mnih et al. 2015), seeded, with uint8 frames.

One agent step is `frame_skip` emulator frames with the same action; its reward is the sum of theirs, and its frame
is the pixel-wise maximum of the last two emulator frames (Atari sprites flicker), in grey (ALE's luminance), resized
from 210×160 to 84×84 by area averaging and rounded to uint8. The agent stacks the last `frame_stack` frames
(`samscale.train.replay`); this module returns one frame per step. An episode starts with a uniformly drawn number
of no-op agent steps in [0, `noop_max`] (Nature's random starts) and is truncated, not ended, after
`max_episode_frames` emulator frames (108,000 = 30 minutes of play, Machado et al. 2018). Rewards are returned
unclipped; the learner clips them to their sign (`rl.clip_rewards`), while reported returns are game scores.

Losing a life does not end an episode (the default, `rl.terminal_on_life_loss: false`): the agent is told only what
a player sees, as Machado et al. 2018 recommend, and training and evaluation episodes are both whole games.
`step` reports lives lost so the learner may treat a life loss as terminal for bootstrapping where that is asked.

Randomness: ALE's own generator (sticky actions, if `sticky_action_prob` > 0) and the no-op counts come from `seed`
only. Install with `pip install 'samscale[rl]'`.
"""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from samscale.data.errors import ConfigError, DatasetUnavailable

PREFIX = "ale/"
"""An `rl.env` naming an ALE game: `ale/` then the ROM id (`ale/breakout`, `ale/space_invaders`)."""
FRAME_SIZE = 84
SCREEN_SHAPE = (210, 160)
ROM_PATTERN = re.compile(r"[a-z0-9_]+")


def ale_version() -> str:
    """The installed ale-py version; DatasetUnavailable with the install command if it is missing."""
    try:
        return version("ale-py")
    except PackageNotFoundError:
        raise DatasetUnavailable("the Arcade Learning Environment is not installed: pip install ale-py (or pip "
                                 "install 'samscale[rl]'; its wheel ships the ROMs)") from None


def is_ale(env: str) -> bool:
    """Whether an `rl.env` value names an ALE game (`ale/ROM`) rather than a MinAtar one."""
    return env.startswith(PREFIX)


def available_games() -> list[str]:
    """ROM ids that ale-py ships, sorted."""
    ale_version()
    from ale_py import roms

    return sorted(roms.get_all_rom_ids())


def rom_path(env: str) -> str:
    """The ROM file of `ale/ROM`; ConfigError naming the valid ids if ale-py has no such ROM."""
    game = env[len(PREFIX):] if is_ale(env) else env
    games = available_games()
    if not ROM_PATTERN.fullmatch(game) or game not in games:
        raise ConfigError(f"unknown ALE game {game!r}; valid: {', '.join(games)}")
    from ale_py import roms

    return str(roms.get_rom_path(game))


def preprocess(previous: np.ndarray, last: np.ndarray) -> Tensor:
    """Max of two grey 210×160 screens, area-resized to 84×84 and rounded: a (1, 84, 84) uint8 frame."""
    screen = torch.from_numpy(np.maximum(previous, last)).to(torch.float32)[None, None]
    small = F.interpolate(screen, size=(FRAME_SIZE, FRAME_SIZE), mode="area")
    return small[0].round().clamp(0, 255).to(torch.uint8)


class AtariEnv:
    """One ALE game with Nature-DQN preprocessing; `reset()` and `step()` return (1, 84, 84) uint8 frames."""

    def __init__(self, env: str, *, seed: int, frame_skip: int = 4, noop_max: int = 30,
                 sticky_action_prob: float = 0.0, max_episode_frames: int = 108_000) -> None:
        path = rom_path(env)
        from ale_py import ALEInterface, LoggerMode

        ALEInterface.setLoggerMode(LoggerMode.Error)
        self.game = env
        self.frame_skip, self.noop_max = frame_skip, noop_max
        self._ale = ALEInterface()
        self._ale.setInt("random_seed", int(seed) % 2**31)
        self._ale.setFloat("repeat_action_probability", float(sticky_action_prob))
        self._ale.setInt("max_num_frames_per_episode", int(max_episode_frames))
        self._ale.loadROM(path)
        self._actions = list(self._ale.getMinimalActionSet())
        self._rng = np.random.default_rng(int(seed))
        self._screens = np.zeros((2, *SCREEN_SHAPE), dtype=np.uint8)
        self._lives = 0

    @property
    def num_actions(self) -> int:
        """Size of the game's minimal action set (Breakout 4, Pong 6, …; at most 18)."""
        return len(self._actions)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(1, 84, 84): one grey frame."""
        return 1, FRAME_SIZE, FRAME_SIZE

    def _grab(self, slot: int) -> None:
        self._ale.getScreenGrayscale(self._screens[slot])

    def _skip(self, action: int) -> tuple[Tensor, float]:
        """`frame_skip` emulator frames of one action: (max-pooled frame, summed reward)."""
        reward = 0.0
        for frame in range(self.frame_skip):
            reward += self._ale.act(self._actions[action])
            if frame == self.frame_skip - 2:
                self._grab(0)
            if self._ale.game_over():
                break
        self._grab(1)
        if self.frame_skip == 1:
            self._screens[0] = self._screens[1]
        return preprocess(self._screens[0], self._screens[1]), reward

    def reset(self) -> Tensor:
        """A new game after a random number of no-op steps; its first frame."""
        self._ale.reset_game()
        self._grab(0)
        self._grab(1)
        frame = preprocess(self._screens[0], self._screens[1])
        for _ in range(int(self._rng.integers(0, self.noop_max + 1))):
            frame, _ = self._skip(0)
            if self._ale.game_over():
                self._ale.reset_game()
        self._lives = self._ale.lives()
        return frame

    def step(self, action: int) -> tuple[Tensor, float, bool, bool, bool]:
        """Take `action` (an index into the minimal action set): (frame, reward, game over, truncated, life lost).

        `truncated` is True when the episode hit `max_episode_frames` without the game ending.
        """
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action must be in 0..{self.num_actions - 1}, got {action}")
        frame, reward = self._skip(action)
        truncated = bool(self._ale.game_truncated())
        terminal = bool(self._ale.game_over(with_truncation=False))
        lives = self._ale.lives()
        life_lost, self._lives = lives < self._lives, lives
        return frame, float(reward), terminal, truncated and not terminal, life_lost


__all__ = ["AtariEnv", "FRAME_SIZE", "PREFIX", "ale_version", "available_games", "is_ale", "preprocess",
           "rom_path"]
