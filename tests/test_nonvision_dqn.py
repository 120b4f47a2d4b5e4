"""The Nature-DQN family, the replay buffer, MinAtar environments and the DQN run loop (determinism, resume)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("minatar")

from samscale.data.minatar_env import MinAtarEnv  # noqa: E402
from samscale.errors import ConfigError  # noqa: E402
from samscale.models.registry import build_model, count_params, describe_ladder, param_count  # noqa: E402
from samscale.spec.run import build_spec  # noqa: E402
from samscale.train.checkpoint import load_checkpoint  # noqa: E402
from samscale.train.loop import train_run  # noqa: E402
from samscale.train.replay import FrameReplay, FrameStack  # noqa: E402
from samscale.train.rl import epsilon, td_loss  # noqa: E402
from samscale.workdir import checkpoint_path  # noqa: E402


def test_nature_dqn_count_is_the_published_architecture():
    # Mnih et al. 2015 on 4x84x84 frames with 18 actions, by hand: conv 8x8/4 (4→32), 4x4/2 (32→64), 3x3/1 (64→64)
    # leave 7x7x64 = 3136 features, then 512 hidden units.
    by_hand = (4 * 64 * 32 + 32) + (32 * 16 * 64 + 64) + (64 * 9 * 64 + 64) + (3136 * 512 + 512) + (512 * 18 + 18)
    assert param_count("dqn", 1) == by_hand == 1_693_362
    counts = [row["n_params"] for row in describe_ladder("dqn")]
    assert counts[0] == pytest.approx(0.43e6, rel=0.01) and counts[-1] == pytest.approx(6.74e6, rel=0.01)
    for size, shape, stem in [(0.5, (4, 84, 84), "auto"), (1.5, (4, 10, 10), "auto"), (0.25, (7, 10, 10), "small")]:
        model = build_model("dqn", size, input_shape=shape, num_classes=6, stem=stem)
        assert count_params(model) == param_count("dqn", size, input_shape=shape, num_classes=6, stem=stem)
        assert model(torch.zeros(2, *shape)).shape == (2, 6)
    with pytest.raises(ValueError, match="no spatial extent"):
        param_count("dqn", 1, input_shape=(4, 10, 10), stem="nature")
    with pytest.raises(ValueError, match="unknown DQN stem 'tiny'"):
        param_count("dqn", 1, stem="tiny")


def _episodes(buffer: FrameReplay, stack: FrameStack, lengths: list[int], frame_shape=(1, 3, 3)):
    """Play episodes of the given lengths into `buffer`, frame k filled with k; returns what the agent saw:
    (absolute slot, observation) after every frame."""
    seen, k = [], 0
    for length in lengths:
        frame = torch.full(frame_shape, k % 251, dtype=torch.uint8)
        buffer.begin(frame)
        stack.reset(frame)
        seen.append((buffer.total - 1, stack.observation()))
        for step in range(length):
            k += 1
            frame = torch.full(frame_shape, k % 251, dtype=torch.uint8)
            buffer.append(step % 3, float(k), frame, done=step == length - 1)
            stack.push(frame)
            seen.append((buffer.total - 1, stack.observation()))
        k += 1
    return seen


def test_replay_buffer_stores_each_frame_once_and_rebuilds_what_the_agent_saw():
    buffer, stack = FrameReplay(12, (1, 3, 3), history=4), FrameStack(4)
    seen = _episodes(buffer, stack, [2, 6, 5])  # 16 slots written into a ring of 12: the first 4 are gone
    assert buffer.total == 16 and len(buffer) == 12 and buffer.frames.shape == (12, 1, 3, 3)
    assert buffer.stored_bytes() == 12 * (9 + 8 + 4 + 1 + 8)  # a frame once, plus action, reward, done, start
    # slots 0-2 hold episode 1, 3-9 episode 2 (frames 3-9), 10-15 episode 3; slots 0-3 are overwritten
    assert seen[4][1][:, 0, 0].tolist() == [3, 3, 3, 4] and seen[7][1][:, 0, 0].tolist() == [4, 5, 6, 7]
    for slot, observation in seen[7:]:  # every observation whose frames are all still held is rebuilt exactly
        assert torch.equal(buffer.stacks(torch.tensor([slot]))[0], observation)
    s, a, r, s2, done = buffer.sample(300, torch.Generator().manual_seed(0))
    # s' is s shifted by one frame within an episode, the reward is the new frame's number, reset slots never sampled
    assert torch.equal(s2[:, :3], s[:, 1:]) and torch.equal(s2[:, 3, 0, 0].float(), r)
    # the transitions into slots 4-7 need frames of slot 3 (evicted) for s; slot 10 begins an episode
    assert set(r.long().tolist()) == {8, 9, 11, 12, 13, 14, 15}
    assert done.tolist() == [float(x in (9, 15)) for x in r.long().tolist()]


def test_replay_chunks_append_stay_within_a_tenth_of_the_buffer_and_round_trip(tmp_path):
    frame_shape = (1, 84, 84)
    buffer, stack = FrameReplay(320, frame_shape, history=4), FrameStack(4)
    folder = tmp_path / "replay"
    _episodes(buffer, stack, [30, 40], frame_shape)
    meta = buffer.save(folder)
    first_files = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    _episodes(buffer, stack, [90, 120, 100], frame_shape)  # 72 + 314 = 386 slots: the ring has wrapped
    meta = buffer.save(folder)
    buffer.prune(folder)
    # the first save's full chunks (10 slots each) were not written again; only the partial one was
    rewritten = [name for name, mtime in first_files.items()
                 if (folder / name).is_file() and (folder / name).stat().st_mtime_ns != mtime]
    assert rewritten == [f"{72 // 10:09d}.pt"]
    on_disk = sum(path.stat().st_size for path in folder.iterdir())
    assert buffer.stored_bytes() == 320 * (84 * 84 + 21) and on_disk <= 1.1 * buffer.stored_bytes()
    copy = FrameReplay(320, frame_shape, history=4)
    copy.restore(folder, meta)
    for name in ("frames", "action", "reward", "done", "start"):
        assert torch.equal(getattr(copy, name), getattr(buffer, name))
    samples = [b.sample(16, torch.Generator().manual_seed(1)) for b in (buffer, copy)]
    assert all(torch.equal(x, y) for x, y in zip(*samples))
    with pytest.raises(ValueError, match="does not fit"):
        FrameReplay(100, frame_shape, history=4).restore(folder, meta)
    next(folder.iterdir()).unlink()
    with pytest.raises(ValueError, match="missing"):
        FrameReplay(320, frame_shape, history=4).restore(folder, meta)


def test_td_loss_and_epsilon_by_hand():
    q = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    targets = torch.tensor([[1.5, 1.0], [2.0, 0.0]])  # (target, action)
    # errors 0.5 (quadratic: 0.125) and 2.0 (linear: 1.5); mean 0.8125
    assert float(td_loss(q, targets)) == pytest.approx(0.8125)
    spec = build_spec({"rl": {"env": "breakout", "eps_start": 1.0, "eps_end": 0.1, "eps_decay_steps": 100},
                       "schedule": {"kind": "constant"}})
    assert [epsilon(spec, s) for s in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_minatar_environment_is_seeded():
    def rollout(seed: int) -> list[float]:
        env = MinAtarEnv("breakout", seed=seed)
        obs, trace = env.reset(), []
        for step in range(60):
            obs, reward, done = env.step(step % 6)
            trace.append(float(obs.sum()) + reward)
            if done:
                obs = env.reset()
        return trace

    assert rollout(3) == rollout(3)
    assert MinAtarEnv("breakout", seed=0).obs_shape == (4, 10, 10)
    with pytest.raises(ValueError, match="unknown MinAtar game 'pong'"):
        MinAtarEnv("pong", seed=0)


def _spec(**optim):
    return build_spec({
        "model": {"family": "dqn", "size": 0.25},
        "optim": {"name": "sam", "base": "adam", "lr": 1e-3, "weight_decay": 0.0, "rho": 0.05, **optim},
        "schedule": {"kind": "constant"},
        "train": {"epochs": 2, "batch_size": 16, "seed": 1},
        "rl": {"env": "breakout", "steps_per_epoch": 80, "buffer_size": 200, "learning_starts": 30,
               "train_every": 2, "target_update": 20, "eps_decay_steps": 100, "eval_episodes": 2,
               "eval_max_steps": 40},
        "runtime": {"threads": 1},
    })


def test_dqn_run_is_deterministic_and_resumes_bit_identically(tmp_path):
    spec = _spec()
    events = []
    whole = train_run(spec, on_event=events.append)
    assert whole.status == "complete" and [type(e).__name__ for e in events] == \
        ["RunStarted", "EpochEnded", "EpochEnded", "RunEnded"]
    assert whole.final["n_params"] == param_count("dqn", 0.25, input_shape=(4, 10, 10), num_classes=6)
    assert "final_test_loss" not in whole.final  # evaluation measures returns, not a loss
    assert whole.final["final_test_return"] >= 0.0 and whole.final["final_test_return_std"] >= 0.0
    assert whole.final["substitute_for"] == "atari"
    first = train_run(spec, workdir=tmp_path, max_epochs=1)
    state = load_checkpoint(checkpoint_path(tmp_path, spec.run_id))  # weights_only=True load
    # the checkpoint names the buffer's slots (80 steps and the first frame of each episode), not its frames
    assert first.status == "running" and state["epoch"] == 1 and state["buffer"]["total"] > 80
    assert not any(isinstance(value, torch.Tensor) for value in state["buffer"].values())
    resumed = train_run(spec, workdir=tmp_path)
    assert resumed.status == "complete"
    for left, right in zip(whole.history, resumed.history):
        assert {k: v for k, v in left.items() if k != "seconds"} == {k: v for k, v in right.items() if k != "seconds"}


def test_dqn_divergence_is_recorded_not_raised():
    spec = _spec(name="sgd", base="sgd", lr=1e30, momentum=0.0)
    result = train_run(spec)
    assert result.status == "diverged" and result.history[-1]["epoch"] == 1


def test_dqn_rejects_a_step_schedule_and_the_recipe_expands():
    spec = _spec().model_copy(update={"schedule": build_spec({}).schedule})
    with pytest.raises(ConfigError, match="schedule.kind: constant"):
        train_run(spec)
    from samscale.recipes import RECIPES, check_data

    study = RECIPES["atari-dqn"].study("smoke")
    assert check_data(study) is None
    specs = study.expand()
    assert len(specs) == 4 and {s.rl.env for s in specs} == {"breakout"}
    assert RECIPES["atari-dqn"].study("cpu").base["rl"]["env"] == "breakout"


@pytest.mark.slow
def test_dqn_run_killed_by_sigkill_resumes_identically(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = _spec().model_copy(update={"train": _spec().train.model_copy(update={"epochs": 4})})
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    work = tmp_path / "work"
    script = ("import sys; from samscale.spec.run import RunSpec; from samscale.train.loop import train_run; "
              "train_run(RunSpec.model_validate_json(open(sys.argv[1]).read()), workdir=sys.argv[2])")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "spec.json"), str(work)])
    ckpt = checkpoint_path(work, spec.run_id)
    try:
        while child.poll() is None:  # kill as soon as the first epoch's checkpoint is on disk
            if ckpt.is_file():
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert load_checkpoint(ckpt)["epoch"] < 4  # killed before the end
    resumed = train_run(spec, workdir=work)
    whole = train_run(spec)
    assert resumed.status == whole.status == "complete"
    for left, right in zip(whole.history, resumed.history, strict=True):
        assert {k: v for k, v in left.items() if k != "seconds"} == {k: v for k, v in right.items() if k != "seconds"}


def test_rl_section_enters_the_identity_only_when_used():
    plain = build_spec({})
    assert "rl" not in plain.identity()
    assert build_spec({"rl": {"steps_per_epoch": 7}}).run_id == plain.run_id  # unused settings cannot matter
    constant = {"schedule": {"kind": "constant"}}
    assert build_spec({"rl": {"env": "breakout"}, **constant}).identity()["rl"]["env"] == "breakout"
    breakout = build_spec({"rl": {"env": "breakout"}, **constant})
    assert build_spec({"rl": {"env": "breakout", "gamma": 0.9}, **constant}).run_id != breakout.run_id
    with pytest.raises(ConfigError, match="rl.gamma"):
        build_spec({"rl": {"env": "breakout", "gamma": 1.5}, **constant})
