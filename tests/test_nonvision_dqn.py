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
from samscale.train.rl import ReplayBuffer, epsilon, td_loss  # noqa: E402
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


def test_replay_buffer_wraps_and_round_trips():
    buffer = ReplayBuffer(3, (1, 2, 2))
    for i in range(5):
        buffer.add(torch.full((1, 2, 2), i % 2), i, float(i), torch.ones(1, 2, 2), done=i == 4)
    assert len(buffer) == 3 and buffer.position == 2
    assert buffer.action.tolist() == [3, 4, 2] and buffer.done.tolist() == [0, 1, 0]
    copy = ReplayBuffer(3, (1, 2, 2))
    copy.restore(buffer.state())
    sampled = [b.sample(4, torch.Generator().manual_seed(0)) for b in (buffer, copy)]
    for left, right in zip(*sampled):
        assert torch.equal(left, right)
    with pytest.raises(ValueError, match="does not fit"):
        ReplayBuffer(2, (1, 2, 2)).restore(buffer.state())


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
    assert first.status == "running" and state["epoch"] == 1 and state["buffer"]["obs"].shape[0] == 80
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
