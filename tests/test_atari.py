"""Atari through the Arcade Learning Environment: Nature-DQN preprocessing against a numpy oracle, seeding, and a
short DQN run on ALE Breakout through `samscale train`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("ale_py")

from samscale.cli import main  # noqa: E402
from samscale.data.atari_env import AtariEnv, preprocess  # noqa: E402
from samscale.models.registry import param_count  # noqa: E402
from samscale.recipes import RECIPES, check_data  # noqa: E402
from samscale.spec.run import build_spec  # noqa: E402
from samscale.store.sqlite import RunStore  # noqa: E402
from samscale.train.checkpoint import load_checkpoint  # noqa: E402
from samscale.workdir import checkpoint_path, replay_path, store_path  # noqa: E402


def test_preprocessing_is_the_max_of_two_screens_area_averaged_to_84_by_84():
    rng = np.random.default_rng(0)
    previous, last = (rng.integers(0, 256, (210, 160), dtype=np.uint8) for _ in range(2))
    frame = preprocess(previous, last)
    both = np.maximum(previous, last).astype(np.float64)
    oracle = np.empty((84, 84))
    for i in range(84):  # area averaging: cell i covers rows floor(i·210/84) … ceil((i+1)·210/84) − 1
        rows = slice(i * 210 // 84, -(-(i + 1) * 210 // 84))
        for j in range(84):
            oracle[i, j] = both[rows, j * 160 // 84: -(-(j + 1) * 160 // 84)].mean()
    assert frame.shape == (1, 84, 84) and frame.dtype == torch.uint8
    assert np.abs(frame[0].numpy().astype(np.float64) - np.round(oracle)).max() <= 1  # float32 rounding at .5


def test_breakout_is_seeded_and_reports_game_over_and_lives():
    def play(seed: int) -> tuple[list[int], int, list[bool]]:
        env = AtariEnv("ale/breakout", seed=seed, noop_max=30, sticky_action_prob=0.25)
        frames, lost = [int(env.reset().sum())], []
        for step in range(120):
            frame, reward, terminal, truncated, life_lost = env.step([1, 2, 3][step % 3])  # FIRE, RIGHT, LEFT
            frames.append(int(frame.sum()))
            lost.append(life_lost)
        return frames, env.num_actions, lost

    first, again, other = play(3), play(3), play(4)
    assert first == again and first[0] != other[0]  # sticky actions (ALE's generator) follow the seed
    assert first[1] == 4  # Breakout's minimal action set: NOOP, FIRE, RIGHT, LEFT
    assert any(first[2])  # a ball missed costs a life within 120 steps
    with pytest.raises(ValueError, match="unknown ALE game 'nonesuch'"):
        AtariEnv("ale/nonesuch", seed=0)


def test_a_few_hundred_ale_steps_through_samscale_train(tmp_path):
    spec = {
        "model": {"family": "dqn", "size": 0.25},
        "optim": {"name": "sam", "base": "adam", "lr": 1e-4, "weight_decay": 0.0, "rho": 0.05},
        "schedule": {"kind": "constant"},
        "train": {"epochs": 2, "batch_size": 8, "seed": 0},
        "rl": {"env": "ale/breakout", "steps_per_epoch": 150, "buffer_size": 400, "learning_starts": 60,
               "train_every": 4, "target_update": 50, "eps_decay_steps": 200, "eval_episodes": 1,
               "eval_max_steps": 40, "sticky_action_prob": 0.0},
        "runtime": {"threads": 1, "keep_optimizer_state": True},
    }
    config = tmp_path / "atari.yaml"
    config.write_text(yaml.safe_dump(spec))
    workdir = tmp_path / "work"
    assert main(["train", str(config), "--workdir", str(workdir)]) == 0
    run = build_spec(spec)
    row = RunStore(store_path(workdir)).runs_frame().iloc[0]
    assert row["status"] == "complete" and row["run_id"] == run.run_id
    # Nature stem on 4 stacked 84x84 frames, Breakout's 4 actions
    assert row["n_params"] == param_count("dqn", 0.25, input_shape=(4, 84, 84), num_classes=4)
    assert "Atari breakout" in row["data_source"] and "no terminal on life loss" in row["data_source"]
    state = load_checkpoint(checkpoint_path(workdir, run.run_id))
    assert state["epoch"] == 2 and state["steps"] == 300 and state["buffer"]["frame_shape"] == [1, 84, 84]
    chunks = sorted(replay_path(workdir, run.run_id).iterdir())
    assert 300 < state["buffer"]["total"] <= 400 and sum(p.stat().st_size for p in chunks) < 1.1 * 400 * 84 * 84


def test_the_paper_budget_plays_ale_breakout_and_the_cpu_budget_minatar():
    paper, cpu = (RECIPES["atari-dqn"].study(budget) for budget in ("paper", "cpu"))
    assert paper.base["rl"]["env"] == "ale/breakout" and cpu.base["rl"]["env"] == "breakout"
    assert check_data(paper) is None
    specs = paper.expand()
    assert len(specs) == 90 and {s.rl.frame_stack for s in specs} == {4} and specs[0].rl.buffer_size == 1_000_000
    # Atari-only fields do not enter a MinAtar run's identity
    minatar = cpu.expand()[0]
    assert "frame_stack" not in minatar.identity()["rl"] and "frame_stack" in specs[0].identity()["rl"]


def test_an_unknown_ale_game_is_refused_before_anything_is_written(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"model": {"family": "dqn"}, "schedule": {"kind": "constant"},
                                      "rl": {"env": "ale/nonesuch"}}))
    assert main(["train", str(config), "--workdir", str(tmp_path / "work")]) == 2
    assert "unknown ALE game 'nonesuch'; valid: " in capsys.readouterr().err and not (tmp_path / "work").exists()
    with pytest.raises(Exception, match="unknown environment 'ALE/Breakout-v5'"):
        build_spec({"rl": {"env": "ALE/Breakout-v5"}})
