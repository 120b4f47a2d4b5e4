"""The DQN run loop (Mnih et al. 2015) on MinAtar, with SAM or its base optimizer; a run like any supervised one.

Called by `train_run` when `spec.rl.env` is set. It emits the same events (`RunStarted`, `EpochEnded`, `RunEnded`),
writes the same atomic, weights_only-loadable checkpoints, and ends `diverged` (not a crash) on a non-finite loss.

- An epoch is `rl.steps_per_epoch` environment steps (ε-greedy, ε linear from `eps_start` to `eps_end` over
  `eps_decay_steps`), one minibatch of `train.batch_size` from the replay buffer every `train_every` steps once
  `learning_starts` transitions are stored, the target network copied every `target_update` steps, Huber TD loss
  with targets r + γ (1 − done) max_a' Q_target(s', a'). Then two sets of `eval_episodes` episodes with ε =
  `eval_epsilon` on independent seeds: `val_return` (for choosing ρ) and `test_return` (reported).
- Every epoch starts a fresh environment seeded from (train.seed, rl.env_seed, epoch), so the episode running at
  the end of an epoch is cut there (a time-limit truncation: its last transition is not stored as terminal).
  Because of this a checkpoint at an epoch boundary holds everything the run depends on: network, target network,
  optimizer, the whole replay buffer (uint8 observations), the agent's generator and step counter. A run killed
  mid-epoch (SIGKILL) resumes from its last checkpoint and, after redoing the lost steps, is bit-identical to an
  uninterrupted run on CPU; the cost is the lost part of one epoch plus writing the buffer at every epoch
  (≈ 2 × buffer_size × 400 bytes for 4-channel games).
- The agent's randomness (network initialization from `train.seed`, exploration, replay sampling) is separate from
  the environments' (sticky actions and game dynamics).
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samscale.errors import ConfigError
from samscale.data.minatar_env import NUM_ACTIONS, MinAtarEnv, minatar_shape, minatar_version
from samscale.models.registry import build_model, count_params
from samscale.optim import SAM, sam_update
from samscale.spec.run import RunSpec, dqn_problem
from samscale.spec.status import RunStatus
from samscale.train.checkpoint import Fence, origin, resume_state, save_checkpoint
from samscale.train.events import EpochEnded, EventHandler, RunEnded, RunStarted
from samscale.train.summary import summarize_history
from samscale.workdir import checkpoint_path

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


class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', done) with uint8 observations; its state is plain tensors."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...]) -> None:
        self.capacity = capacity
        self.obs = torch.zeros((capacity, *obs_shape), dtype=torch.uint8)
        self.next_obs = torch.zeros((capacity, *obs_shape), dtype=torch.uint8)
        self.action = torch.zeros(capacity, dtype=torch.int64)
        self.reward = torch.zeros(capacity, dtype=torch.float32)
        self.done = torch.zeros(capacity, dtype=torch.float32)
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Tensor, action: int, reward: float, next_obs: Tensor, done: bool) -> None:
        """Store one transition, overwriting the oldest when full."""
        i = self.position
        self.obs[i], self.next_obs[i] = obs.to(torch.uint8), next_obs.to(torch.uint8)
        self.action[i], self.reward[i], self.done[i] = action, reward, float(done)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        """`batch_size` transitions drawn uniformly with replacement: (s, a, r, s', done) as float/int tensors."""
        index = torch.randint(self.size, (batch_size,), generator=generator)
        return (self.obs[index].float(), self.action[index], self.reward[index], self.next_obs[index].float(),
                self.done[index])

    def state(self) -> dict[str, Any]:
        """The stored transitions (only the filled part) and the write position."""
        n = self.size
        return {"obs": self.obs[:n].clone(), "next_obs": self.next_obs[:n].clone(), "action": self.action[:n].clone(),
                "reward": self.reward[:n].clone(), "done": self.done[:n].clone(), "position": self.position}

    def restore(self, state: dict[str, Any]) -> None:
        """Load what `state()` returned (into a buffer of the same capacity and observation shape)."""
        n = int(state["obs"].shape[0])
        if n > self.capacity or tuple(state["obs"].shape[1:]) != tuple(self.obs.shape[1:]):
            raise ValueError(f"replay buffer checkpoint of shape {tuple(state['obs'].shape)} does not fit a buffer "
                             f"of capacity {self.capacity} and observations {tuple(self.obs.shape[1:])}")
        for name in ("obs", "next_obs", "action", "reward", "done"):
            getattr(self, name)[:n] = state[name]
        self.size, self.position = n, int(state["position"])


def td_loss(q_values: Tensor, targets: Tensor) -> Tensor:
    """Huber loss between Q(s, a) and the TD target; `targets` holds (target, action) per row."""
    chosen = q_values.gather(1, targets[:, 1].long().unsqueeze(1)).squeeze(1)
    return F.smooth_l1_loss(chosen, targets[:, 0])


class _Agent:
    """The mutable state of a DQN run between epochs (everything a checkpoint must capture)."""

    def __init__(self, spec: RunSpec, device: torch.device, build_optimizer: Callable[..., torch.optim.Optimizer]):
        self.spec = spec
        self.device = device
        self.obs_shape = minatar_shape(spec.rl.env)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.train.seed)
            net = build_model(spec.model.family, spec.model.size, input_shape=self.obs_shape,
                              num_classes=NUM_ACTIONS, **spec.model.options)
        self.q = net.to(device)
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.n_params = count_params(self.q)
        self.optimizer = build_optimizer(spec, list(self.q.parameters()))
        self.buffer = ReplayBuffer(spec.rl.buffer_size, self.obs_shape)
        self.generator = torch.Generator().manual_seed(spec.train.seed + AGENT_SEED_OFFSET)
        self.steps = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    # -- acting ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Tensor, eps: float, generator: torch.Generator) -> int:
        """ε-greedy action: uniform with probability ε, else argmax Q (ties to the lowest action)."""
        if float(torch.rand((), generator=generator)) < eps:
            return int(torch.randint(NUM_ACTIONS, (), generator=generator))
        return int(self.q(obs.unsqueeze(0).to(self.device)).argmax(dim=1))

    # -- learning --------------------------------------------------------------------------------------------
    def learn(self) -> Tensor:
        """One optimizer step on a replay minibatch; returns the clean TD loss."""
        obs, action, reward, next_obs, done = (t.to(self.device) for t in
                                               self.buffer.sample(self.spec.train.batch_size, self.generator))
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
        env = MinAtarEnv(rl.env, seed=env_seed(self.spec, self.epoch, "train"),
                         sticky_action_prob=rl.sticky_action_prob)
        obs = env.reset()
        losses: list[Tensor] = []
        returns: list[float] = []
        episode_return = 0.0
        self.q.train()
        for _ in range(rl.steps_per_epoch):
            action = self.act(obs, epsilon(self.spec, self.steps), self.generator)
            next_obs, reward, done = env.step(action)
            self.buffer.add(obs, action, reward, next_obs, done)
            episode_return += reward
            obs = next_obs
            if done:
                returns.append(episode_return)
                episode_return, obs = 0.0, env.reset()
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
        """Mean return over `eval_episodes` episodes (each capped at `eval_max_steps`) with ε = `eval_epsilon`."""
        rl = self.spec.rl
        env = MinAtarEnv(rl.env, seed=env_seed(self.spec, self.epoch, stream),
                         sticky_action_prob=rl.sticky_action_prob)
        generator = torch.Generator().manual_seed(env_seed(self.spec, self.epoch, stream))
        was_training = self.q.training
        self.q.eval()
        returns = []
        for _ in range(rl.eval_episodes):
            obs, total = env.reset(), 0.0
            for _ in range(rl.eval_max_steps):
                obs, reward, done = env.step(self.act(obs, rl.eval_epsilon, generator))
                total += reward
                if done:
                    break
            returns.append(total)
        self.q.train(was_training)
        mean = sum(returns) / len(returns)
        std = math.sqrt(sum((r - mean) ** 2 for r in returns) / max(len(returns) - 1, 1))
        return {f"{stream}_return": mean, f"{stream}_return_std": std}

    # -- checkpoint state ------------------------------------------------------------------------------------
    def state(self, *, weights_only: bool = False) -> dict[str, Any]:
        """Everything needed to continue bit-identically; a finished run may keep only its weights."""
        state: dict[str, Any] = {"run_id": self.spec.run_id, "spec": self.spec.model_dump_json(), "epoch": self.epoch,
                                 "model": self.q.state_dict(), "history": self.history}
        if not weights_only:
            state.update(target=self.target.state_dict(), optimizer=self.optimizer.state_dict(),
                         buffer=self.buffer.state(), generator=self.generator.get_state(), steps=self.steps)
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `state()`."""
        if state.get("run_id") != self.spec.run_id:
            raise ValueError(f"checkpoint is of run {state.get('run_id')!r}, not of run {self.spec.run_id!r}")
        self.q.load_state_dict(state["model"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        if "optimizer" in state:
            self.target.load_state_dict(state["target"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.buffer.restore(state["buffer"])
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
    if ckpt is not None and (state := resume_state(ckpt)) is not None:
        agent.restore(state)
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
            save_checkpoint(ckpt, {**agent.state(), **origin(run_id, fence)}, fence)
        emit(EpochEnded(run_id, agent.epoch, row))
    final = summarize_history(agent.history, score="val_return")
    final.update(n_params=agent.n_params, n_nonzero=int(sum(int((p != 0).sum()) for p in agent.q.parameters())),
                 data_source=f"MinAtar {spec.rl.env} (minatar {minatar_version()}), sticky actions "
                             f"p={spec.rl.sticky_action_prob}; stand-in for Atari (ALE)",
                 substitute_for="atari")
    if status == RunStatus.COMPLETE and ckpt is not None:
        save_checkpoint(ckpt, {**agent.state(weights_only=not spec.runtime.keep_optimizer_state),
                               **origin(run_id, fence)}, fence)
    emit(RunEnded(run_id, status, final))
    return status, final, agent.history
