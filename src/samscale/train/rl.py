"""The DQN run loop (Mnih et al. 2015) on MinAtar or ALE Atari, with SAM or its base optimizer; a run like any
supervised one.

Called by `train_run` when `spec.rl.env` is set. It emits the same events (`RunStarted`, `EpochEnded`, `RunEnded`),
writes the same atomic, weights_only-loadable checkpoints, and ends `diverged` (not a crash) on a non-finite loss.

- An epoch is `rl.steps_per_epoch` environment steps (ε-greedy, ε linear from `eps_start` to `eps_end` over
  `eps_decay_steps`), one minibatch of `train.batch_size` from the replay buffer every `train_every` steps once
  `learning_starts` transitions are stored, the target network copied every `target_update` steps, Huber TD loss
  with targets r + γ (1 − done) max_a' Q_target(s', a') (Atari: r clipped to its sign, `done` at game over, or at a
  life lost with `rl.terminal_on_life_loss`; returns are reported unclipped). Then two sets of `eval_episodes`
  episodes with ε = `eval_epsilon` on independent seeds: `val_return` (for choosing ρ) and `test_return` (reported).
- Every epoch starts a fresh environment seeded from (train.seed, rl.env_seed, epoch), so the episode running at
  the end of an epoch is cut there (a time-limit truncation: its last transition is not stored as terminal).
  Because of this a checkpoint at an epoch boundary holds everything the run depends on: network, target network,
  optimizer, the replay buffer, the agent's generator and step counter. The buffer (`samscale.train.replay`) keeps
  each frame once and is saved by appending chunks to `checkpoints/RUN_ID.replay/`: an epoch writes its own new
  frames, not the whole buffer. A run killed mid-epoch (SIGKILL) resumes from its last checkpoint and, after redoing
  the lost steps, is bit-identical to an uninterrupted run on CPU.
- The agent's randomness (network initialization from `train.seed`, exploration, replay sampling) is separate from
  the environments' (sticky actions and game dynamics).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samscale.errors import ConfigError
from samscale.data.rl_env import env_info, make_env
from samscale.models.registry import build_model, count_params
from samscale.optim import SAM, sam_update
from samscale.spec.run import RunSpec, dqn_problem
from samscale.spec.status import RunStatus
from samscale.train.checkpoint import Fence, origin, resume_state, save_checkpoint
from samscale.train.events import EpochEnded, EventHandler, RunEnded, RunStarted
from samscale.train.replay import FrameReplay, FrameStack
from samscale.train.summary import summarize_history
from samscale.workdir import checkpoint_path, replay_path

AGENT_SEED_OFFSET = 5_000_011  # exploration and replay sampling
ENV_SEED_BASE = 7_000_003  # environment streams: train (0), validation (1) and test (2) episodes
STREAMS = {"train": 0, "val": 1, "test": 2}


def env_seed(spec: RunSpec, epoch: int, stream: str) -> int:
    """Seed of the environment of `stream` in `epoch` (0-based), from train.seed and rl.env_seed only."""
    key = ((spec.train.seed * 1_000_003 + spec.rl.env_seed) * 1_000_033 + epoch) * 3 + STREAMS[stream]
    return (ENV_SEED_BASE + key) % 2**32


def epsilon(spec: RunSpec, step: int) -> float:
    """Exploration rate at global environment step `step` (linear decay, then constant)."""
    rl = spec.rl
    fraction = min(1.0, step / rl.eps_decay_steps)
    return rl.eps_start + fraction * (rl.eps_end - rl.eps_start)


def td_loss(q_values: Tensor, targets: Tensor) -> Tensor:
    """Huber loss between Q(s, a) and the TD target; `targets` holds (target, action) per row."""
    chosen = q_values.gather(1, targets[:, 1].long().unsqueeze(1)).squeeze(1)
    return F.smooth_l1_loss(chosen, targets[:, 0])


class _Agent:
    """The mutable state of a DQN run between epochs (everything a checkpoint must capture)."""

    def __init__(self, spec: RunSpec, device: torch.device, build_optimizer: Callable[..., torch.optim.Optimizer]):
        self.spec = spec
        self.device = device
        self.info = env_info(spec.rl)
        self.num_actions = self.info.num_actions
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.train.seed)
            net = build_model(spec.model.family, spec.model.size, input_shape=self.info.obs_shape,
                              num_classes=self.num_actions, **spec.model.options)
        self.q = net.to(device)
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.n_params = count_params(self.q)
        self.optimizer = build_optimizer(spec, list(self.q.parameters()))
        self.buffer = FrameReplay(spec.rl.buffer_size, self.info.frame_shape, self.info.history)
        self.generator = torch.Generator().manual_seed(spec.train.seed + AGENT_SEED_OFFSET)
        self.steps = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    def _inputs(self, frames: Tensor) -> Tensor:
        """uint8 observations as the network's float inputs (Atari: scaled to [0, 1])."""
        x = frames.to(self.device).float()
        return x if self.info.scale == 1.0 else x * self.info.scale

    # -- acting ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Tensor, eps: float, generator: torch.Generator) -> int:
        """ε-greedy action: uniform with probability ε, else argmax Q (ties to the lowest action)."""
        if float(torch.rand((), generator=generator)) < eps:
            return int(torch.randint(self.num_actions, (), generator=generator))
        return int(self.q(self._inputs(obs.unsqueeze(0))).argmax(dim=1))

    # -- learning --------------------------------------------------------------------------------------------
    def learn(self) -> Tensor:
        """One optimizer step on a replay minibatch; returns the clean TD loss."""
        obs, action, reward, next_obs, done = self.buffer.sample(self.spec.train.batch_size, self.generator)
        obs, next_obs = self._inputs(obs), self._inputs(next_obs)
        action, reward, done = action.to(self.device), reward.to(self.device), done.to(self.device)
        with torch.no_grad():
            bootstrap = self.target(next_obs).max(dim=1).values
            target = reward + self.spec.rl.gamma * (1.0 - done) * bootstrap
        targets = torch.stack([target, action.float()], dim=1)
        if isinstance(self.optimizer, SAM):
            loss, _ = sam_update(self.q, td_loss, obs, targets, self.optimizer, m=self.spec.optim.m)
        else:
            loss = td_loss(self.q(obs), targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def train_epoch(self) -> dict[str, float]:
        """`steps_per_epoch` environment steps with learning; mean TD loss and mean return of finished episodes."""
        rl = self.spec.rl
        clip = rl.is_ale and rl.clip_rewards
        life_ends = rl.is_ale and rl.terminal_on_life_loss
        env = make_env(rl, env_seed(self.spec, self.epoch, "train"))
        stack = FrameStack(self.info.history)
        frame = env.reset()
        stack.reset(frame)
        self.buffer.begin(frame)
        losses: list[Tensor] = []
        returns: list[float] = []
        episode_return = 0.0
        self.q.train()
        for _ in range(rl.steps_per_epoch):
            action = self.act(stack.observation(), epsilon(self.spec, self.steps), self.generator)
            frame, reward, terminal, truncated, life_lost = env.step(action)
            stored = float((reward > 0) - (reward < 0)) if clip else reward
            self.buffer.append(action, stored, frame, terminal or (life_ends and life_lost))
            stack.push(frame)
            episode_return += reward
            if terminal or truncated:
                returns.append(episode_return)
                episode_return, frame = 0.0, env.reset()
                stack.reset(frame)
                self.buffer.begin(frame)
            self.steps += 1
            if self.steps > rl.learning_starts and self.steps % rl.train_every == 0:
                loss = self.learn()
                losses.append(loss)
                if not torch.isfinite(loss):
                    break
            if self.steps % rl.target_update == 0:
                self.target.load_state_dict(self.q.state_dict())
        mean_loss = float(torch.stack(losses).double().mean()) if losses else 0.0
        metrics = {"train_loss": mean_loss, "train_episodes": float(len(returns)),
                   "epsilon": epsilon(self.spec, self.steps)}
        if returns:  # an epoch shorter than one episode finishes none
            metrics["train_return"] = sum(returns) / len(returns)
        return metrics

    @torch.no_grad()
    def evaluate(self, stream: str) -> dict[str, float]:
        """Mean return (game score) over `eval_episodes` episodes (each capped at `eval_max_steps`), ε =
        `eval_epsilon`."""
        rl = self.spec.rl
        env = make_env(rl, env_seed(self.spec, self.epoch, stream))
        generator = torch.Generator().manual_seed(env_seed(self.spec, self.epoch, stream))
        stack = FrameStack(self.info.history)
        was_training = self.q.training
        self.q.eval()
        returns = []
        for _ in range(rl.eval_episodes):
            stack.reset(env.reset())
            total = 0.0
            for _ in range(rl.eval_max_steps):
                frame, reward, terminal, truncated, _ = env.step(self.act(stack.observation(), rl.eval_epsilon,
                                                                          generator))
                stack.push(frame)
                total += reward
                if terminal or truncated:
                    break
            returns.append(total)
        self.q.train(was_training)
        mean = sum(returns) / len(returns)
        std = math.sqrt(sum((r - mean) ** 2 for r in returns) / max(len(returns) - 1, 1))
        return {f"{stream}_return": mean, f"{stream}_return_std": std}

    # -- checkpoint state ------------------------------------------------------------------------------------
    def save(self, ckpt: Path, replay: Path, fence: Fence | None = None, *, weights_only: bool = False) -> None:
        """Write the checkpoint (after appending the buffer's new chunks to `replay`); a finished run may keep
        only its weights, and then its replay folder goes. With `fence`, the chunks are appended and the checkpoint
        renamed into place only while this process still holds the run (else `ClaimLost`, and nothing is written
        or pruned)."""
        run_id = self.spec.run_id
        state: dict[str, Any] = {"run_id": run_id, "spec": self.spec.model_dump_json(), "epoch": self.epoch,
                                 "model": self.q.state_dict(), "history": self.history, **origin(run_id, fence)}
        if not weights_only:
            with fence.hold(run_id) if fence is not None else contextlib.nullcontext():
                buffer = self.buffer.save(replay)
            state.update(target=self.target.state_dict(), optimizer=self.optimizer.state_dict(),
                         buffer=buffer, generator=self.generator.get_state(), steps=self.steps)
        save_checkpoint(ckpt, state, fence)
        if weights_only:
            FrameReplay.clear(replay)
        else:
            self.buffer.prune(replay)

    def restore(self, state: dict[str, Any], replay: Path) -> None:
        """Continue from a checkpoint written by `save()`."""
        if state.get("run_id") != self.spec.run_id:
            raise ValueError(f"checkpoint is of run {state.get('run_id')!r}, not of run {self.spec.run_id!r}")
        self.q.load_state_dict(state["model"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        if "optimizer" in state:
            self.target.load_state_dict(state["target"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.buffer.restore(replay, state["buffer"])
            self.generator.set_state(state["generator"])
            self.steps = int(state["steps"])
        elif self.epoch < self.spec.train.epochs:
            raise ValueError(f"checkpoint of run {self.spec.run_id} at epoch {self.epoch} has no optimizer state; "
                             "only a finished run's checkpoint may be weights-only")


def train_rl(
    spec: RunSpec,
    workdir: str | Path | None,
    emit: EventHandler,
    max_epochs: int | None,
    *,
    device: torch.device,
    build_optimizer: Callable[[RunSpec, list[nn.Parameter]], torch.optim.Optimizer],
    fence: Fence | None = None,
) -> tuple[str, dict[str, Any], list[dict[str, float]]]:
    """Run (or resume) a DQN run: returns (status, final summary, history); see the module docstring."""
    if problem := dqn_problem(spec):  # refused when the spec is validated; a spec built without validation too
        raise ConfigError(problem)
    agent = _Agent(spec, device, build_optimizer)
    run_id = spec.run_id
    ckpt = checkpoint_path(workdir, run_id) if workdir is not None else None
    replay = replay_path(workdir, run_id) if workdir is not None else None
    if ckpt is not None and (state := resume_state(ckpt)) is not None:
        agent.restore(state, replay)
    elif replay is not None:
        FrameReplay.clear(replay)  # chunks left by a deleted checkpoint belong to no run state
    emit(RunStarted(spec, agent.n_params, list(agent.history)))
    status, epochs_this_call = RunStatus.COMPLETE, 0
    while agent.epoch < spec.train.epochs:
        if max_epochs is not None and epochs_this_call >= max_epochs:
            return RunStatus.RUNNING, {}, agent.history
        started = time.perf_counter()
        lr = agent.optimizer.param_groups[0]["lr"]
        metrics = agent.train_epoch()
        agent.epoch += 1
        epochs_this_call += 1
        row = {"epoch": agent.epoch, "lr": lr, **metrics}
        if not math.isfinite(metrics["train_loss"]):
            status = RunStatus.DIVERGED
            agent.history.append(row)
            emit(EpochEnded(run_id, agent.epoch, row))
            break
        for stream in ("val", "test"):
            row.update(agent.evaluate(stream))
        row["seconds"] = time.perf_counter() - started
        agent.history.append(row)
        if ckpt is not None:
            agent.save(ckpt, replay, fence)
        emit(EpochEnded(run_id, agent.epoch, row))
    final = summarize_history(agent.history, score="val_return")
    final.update(n_params=agent.n_params, n_nonzero=int(sum(int((p != 0).sum()) for p in agent.q.parameters())),
                 data_source=agent.info.description, substitute_for=None if spec.rl.is_ale else "atari")
    if status == RunStatus.COMPLETE and ckpt is not None:
        agent.save(ckpt, replay, fence, weights_only=not spec.runtime.keep_optimizer_state)
    emit(RunEnded(run_id, status, final))
    return status, final, agent.history
