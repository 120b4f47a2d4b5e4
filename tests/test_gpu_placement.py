"""One rank per GPU on a host without one: mocked device counts for the refusals and the binding, and a real
2-process run started by torchrun (gloo, env:// rendezvous) against a single-process reference."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from samscale.cli import main
from samscale.errors import ConfigError
from samscale.spec.run import build_spec
from samscale.train import placement


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this host shows `n` CUDA devices: set(n) patches torch's answers; set_device calls are recorded."""
    bound: list[int] = []

    def set_count(n: int) -> list[int]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", bound.append)
        return bound

    return set_count


def test_more_processes_than_gpus_is_refused_with_both_ways_out(gpus, monkeypatch):
    gpus(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(ConfigError) as refused:
        placement.check_process_count(2, "auto")
    message = str(refused.value)
    assert "runtime.nproc=2" in message and "shows 1" in message and "CUDA_VISIBLE_DEVICES=3" in message
    assert "--nproc 1" in message and "runtime.device=cpu" in message
    placement.check_process_count(2, "cpu")  # gloo on the CPU: any number of processes
    placement.check_process_count(1, "cuda")
    gpus(4)
    placement.check_process_count(4, "cuda")
    with pytest.raises(ConfigError, match="names one GPU"):
        placement.check_process_count(2, "cuda:1")  # every rank on one GPU: NCCL would refuse


def test_rank_r_binds_the_r_th_visible_gpu_and_cpu_runs_bind_none(gpus):
    bound = gpus(4)
    assert [placement.bind_rank(rank, "auto") for rank in range(4)] == [True] * 4
    assert bound == [0, 1, 2, 3]  # indices among the visible GPUs: CUDA_VISIBLE_DEVICES decides which they are
    assert placement.bind_rank(0, "cpu") is False and bound == [0, 1, 2, 3]
    gpus(0)
    assert placement.bind_rank(1, "auto") is False


def test_train_run_and_the_cli_refuse_before_starting_anything(gpus, tiny_config, tmp_path):
    from samscale.train.loop import train_run

    gpus(1)
    spec = build_spec(tiny_config, ["runtime.nproc=2", "runtime.device=cuda"])
    with pytest.raises(ConfigError, match="need 2 GPUs"):
        train_run(spec, workdir=tmp_path / "direct")
    assert not (tmp_path / "direct").exists()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(config), "--nproc", "2", "--workdir", str(tmp_path / "w")]) == 2
    assert not (tmp_path / "w").exists()  # refused before the store was created


def test_dqn_on_several_processes_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="a DQN run .* trains on one process"):
        build_spec({"rl": {"env": "breakout"}}, ["runtime.nproc=2"])
    config = tmp_path / "dqn.yaml"
    config.write_text(yaml.safe_dump({"rl": {"env": "breakout"}}))
    assert main(["train", str(config), "--nproc", "2", "--workdir", str(tmp_path / "w")]) == 2


def test_torchrun_world_must_match_the_spec(monkeypatch, tiny_config, tmp_path):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert placement.launched_by_torchrun() and placement.torchrun_world() == (0, 2, 0)
    with pytest.raises(ConfigError, match="runtime.nproc=3 but torchrun started 2"):
        with placement.torchrun_group(3, "cpu"):
            pass
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(config), "--nproc", "3", "--workdir", str(tmp_path / "w")]) == 2


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs a POSIX host")
def test_samscale_train_under_torchrun_equals_one_process(tiny_config, tmp_path):
    """`torchrun --nproc-per-node 2 -m samscale.cli train` (gloo on the CPU, env:// rendezvous): rank 0 records the
    run once, and the final weights equal a one-process run of the same spec up to float32 summation order
    (rtol 1e-4, atol 1e-5: the two ranks' gradients are summed in a different order than one batch's)."""
    from samscale.store import RunStore
    from samscale.train.checkpoint import load_checkpoint
    from samscale.train.loop import build_model_for, dataset_for, train_run
    from samscale.workdir import checkpoint_path, store_path

    tiny_config["optim"]["name"] = "sam"
    tiny_config["train"]["epochs"] = 2
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    workdir = tmp_path / "w"
    done = subprocess.run(_torchrun() + ["--standalone", "--nproc-per-node", "2", "-m", "samscale.cli", "train",
                                         str(config), "--workdir", str(workdir)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    spec = build_spec(tiny_config, ["runtime.nproc=2"])
    frame = RunStore(store_path(workdir)).runs_frame()
    row = frame.set_index("run_id").loc[spec.run_id]
    assert row["status"] == "complete" and row["attempts"] == 1 and len(frame) == 1
    assert row["device_name"] == "cpu" and row["precision"] == "highest" and row["torch_version"] == torch.__version__
    ours = load_checkpoint(checkpoint_path(workdir, spec.run_id))["model"]
    single = build_spec(tiny_config)
    train_run(single, workdir=tmp_path / "ref")
    theirs = load_checkpoint(checkpoint_path(tmp_path / "ref", single.run_id))["model"]
    start = build_model_for(single, dataset_for(single)).state_dict()
    assert max(float((theirs[k] - start[k]).abs().max()) for k in start) > 1e-3  # training moved the weights
    assert set(ours) == set(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5)
