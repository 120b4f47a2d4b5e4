"""One interface over the DQN environments: MinAtar boards and ALE Atari frames, both as uint8 frames.

`make_env(rl, seed)` builds the environment an `RLSpec` names. Every environment returns one uint8 frame per step
(MinAtar: its (channels, 10, 10) board of 0s and 1s; ALE: a (1, 84, 84) grey frame) and says how many frames the
agent stacks (`history`: 1 for MinAtar, whose boards show motion, `rl.frame_stack` for Atari) and by what the frames
are scaled into the network (`scale`: 1 for MinAtar, 1/255 for Atari).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from samscale.data.atari_env import AtariEnv, ale_version, is_ale
from samscale.data.minatar_env import NUM_ACTIONS, MinAtarEnv, minatar_version
from samscale.spec.run import RLSpec


class FrameEnv(Protocol):
    """What the DQN loop needs from an environment."""

    num_actions: int
    frame_shape: tuple[int, int, int]

    def reset(self) -> Tensor: ...

    def step(self, action: int) -> tuple[Tensor, float, bool, bool, bool]: ...


class MinAtarFrames:
    """A MinAtar game returning uint8 boards and the five-part step of `AtariEnv` (never truncated, no lives)."""

    num_actions = NUM_ACTIONS

    def __init__(self, game: str, *, seed: int, sticky_action_prob: float) -> None:
        self._env = MinAtarEnv(game, seed=seed, sticky_action_prob=sticky_action_prob)
        self.frame_shape = self._env.obs_shape

    def reset(self) -> Tensor:
        return self._env.reset().to(torch.uint8)

    def step(self, action: int) -> tuple[Tensor, float, bool, bool, bool]:
        obs, reward, done = self._env.step(action)
        return obs.to(torch.uint8), reward, done, False, False


@dataclass(frozen=True)
class EnvInfo:
    """What the network and the replay buffer need to know of an environment before it runs."""

    frame_shape: tuple[int, int, int]
    history: int
    num_actions: int
    scale: float
    description: str

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """The stacked observation the network sees: (history × channels, height, width)."""
        channels, height, width = self.frame_shape
        return channels * self.history, height, width


def make_env(rl: RLSpec, seed: int) -> FrameEnv:
    """The environment `rl.env` names, seeded with `seed`."""
    if rl.env is None:
        raise ValueError("rl.env is not set: this is not a reinforcement-learning run")
    if is_ale(rl.env):
        return AtariEnv(rl.env, seed=seed, frame_skip=rl.frame_skip, noop_max=rl.noop_max,
                        sticky_action_prob=rl.sticky_action_prob, max_episode_frames=rl.max_episode_frames)
    return MinAtarFrames(rl.env, seed=seed, sticky_action_prob=rl.sticky_action_prob)


def env_info(rl: RLSpec) -> EnvInfo:
    """Frame shape, history, action count, scale and a description of `rl.env` (builds the environment once)."""
    env = make_env(rl, seed=0)
    if is_ale(rl.env):
        return EnvInfo(env.frame_shape, rl.frame_stack, env.num_actions, 1.0 / 255.0,
                       f"Atari {rl.env[4:]} (ale-py {ale_version()}), Nature-DQN preprocessing: 84×84 grey, "
                       f"frame skip {rl.frame_skip} with a max over the last two frames, {rl.frame_stack}-frame "
                       f"stack, rewards {'clipped to their sign' if rl.clip_rewards else 'unclipped'}, up to "
                       f"{rl.noop_max} no-op starts, sticky actions p={rl.sticky_action_prob}, "
                       f"{'terminal' if rl.terminal_on_life_loss else 'no terminal'} on life loss")
    return EnvInfo(env.frame_shape, 1, env.num_actions, 1.0,
                   f"MinAtar {rl.env} (minatar {minatar_version()}), sticky actions p={rl.sticky_action_prob}; "
                   "stand-in for Atari (ALE)")


def require_env(env: str) -> None:
    """DatasetUnavailable (with the install command) unless the package behind `env` is installed."""
    ale_version() if is_ale(env) else minatar_version()
