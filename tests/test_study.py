"""Studies: grid expansion, resumable sweeps (kill -9 mid-sweep), concurrent sweeps, executors, recipes."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from samscale.errors import ConfigError
from samscale.sweep.executors import LocalPoolExecutor, SerialExecutor
from samscale.workdir import store_path
from samscale.store import RunStore
from samscale.spec.study import Study, load_study
from samscale.sweep.sweep import sweep

METRIC_COLUMNS = ["run_id", "status", "final_train_loss", "final_val_acc", "final_test_acc", "best_epoch"]


def _study(tiny_config, epochs=2, seeds=(0, 1), rhos=(0.05, 0.2)):
    base = dict(tiny_config)
    base["train"] = dict(base["train"], epochs=epochs)
    return Study(
        name="tiny",
        base=base,
        grid={"model.size": [0.25, 0.5], "train.seed": list(seeds)},
        arms=[{"name": "sgd", "set": {"optim.name": "sgd"}},
              {"name": "sam", "set": {"optim.name": "sam"}, "grid": {"optim.rho": list(rhos)}}],
    )


def test_expansion_counts_and_stable_ids(tiny_config):
    study = _study(tiny_config)
    specs = study.expand()
    assert len(specs) == 2 * 2 * (1 + 2)  # sizes × seeds × (sgd + 2 rho)
    assert len({s.run_id for s in specs}) == len(specs)
    assert [s.run_id for s in specs] == [s.run_id for s in _study(tiny_config).expand()]
    sam = [s for s in specs if s.optim.name == "sam"]
    assert sorted({s.optim.rho for s in sam}) == [0.05, 0.2]
    assert study.expected_seeds() == 2


def test_identical_points_of_two_arms_are_one_run(tiny_config):
    study = Study(name="dup", base=tiny_config, grid={"train.seed": [0]},
                  arms=[{"name": "a", "set": {"optim.name": "sgd", "optim.rho": 0.1}},
                        {"name": "b", "set": {"optim.name": "sgd", "optim.rho": 0.2}}])
    assert len(study.expand()) == 1  # rho cannot change an SGD run


def test_budgets_and_errors(tmp_path, tiny_config):
    path = tmp_path / "study.yaml"
    config = _study(tiny_config).model_dump(mode="json")
    config["budgets"] = {"smoke": {"set": {"train.epochs": 1}, "grid": {"model.size": [0.25]}}}
    path.write_text(yaml.safe_dump(config))
    smoke = load_study(path, "smoke")
    assert {s.train.epochs for s in smoke.expand()} == {1} and len(smoke.expand()) == 6
    with pytest.raises(ConfigError, match="no budget 'paper'; valid: smoke"):
        load_study(path, "paper")
    config["grid"]["optim.lr"] = []
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="optim.lr"):
        load_study(path)
    config["grid"]["optim.lr"] = [-1.0]
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="optim.lr"):
        load_study(path).expand()


def test_sweep_skips_finished_runs_and_isolates_failures(tiny_config, tmp_path):
    study = _study(tiny_config, epochs=1, seeds=(0,))
    first = sweep(study, tmp_path, SerialExecutor())
    assert first.count("complete") == 6 and first.skipped == 0
    again = sweep(study, tmp_path, SerialExecutor())
    assert again.skipped == 6 and again.outcomes == []
    broken = study.model_copy(update={"grid": {**study.grid, "data.train_subset": [100000000]}})
    result = sweep(broken, tmp_path / "broken", SerialExecutor())
    assert result.count("failed") + result.count("complete") == 6  # errors recorded, the sweep went on


def _sweep_command(study_path, workdir, executor="serial", workers=1):
    return [sys.executable, "-m", "samscale.cli", "sweep", str(study_path), "--out", str(workdir),
            "--executor", executor, "--workers", str(workers), "--threads", "1", "--no-report"]


def _live_members(group: int) -> list[int]:
    """Pids of the process group that are alive (not zombies), read from /proc."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                alive.append(int(entry))
    return alive


def _final_table(workdir):
    frame = RunStore(store_path(workdir)).runs_frame("tiny")
    return frame[METRIC_COLUMNS].sort_values("run_id").reset_index(drop=True)


@pytest.mark.parametrize("executor", ["serial", "local"])
def test_kill_mid_sweep_then_resume_loses_and_repeats_nothing(tiny_config, tmp_path, executor):
    study = _study(tiny_config, epochs=4, seeds=(0,), rhos=(0.05,))
    study = study.model_copy(update={"base": {**study.base, "data": {**study.base["data"], "train_subset": 1500}}})
    path = tmp_path / "study.yaml"
    path.write_text(study.to_yaml())
    reference = tmp_path / "reference"
    sweep(study, reference, SerialExecutor())

    killed = tmp_path / "killed"
    process = subprocess.Popen(_sweep_command(path, killed, executor, workers=2), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    store_file = store_path(killed)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some run is finished and another is mid-way
        if store_file.exists():
            frame = RunStore(store_file).runs_frame()
            if not frame.empty and (frame["status"] == "complete").any() and (
                (frame["status"] == "running") & (frame["epochs_done"] >= 1)).any():
                break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # the sweep process only: its workers must die with it
    process.wait()
    time.sleep(1.0)
    assert _live_members(process.pid) == []  # no orphaned worker is still training
    frame = RunStore(store_file).runs_frame()
    finished_before = set(frame.loc[frame["status"] == "complete", "run_id"])
    assert 0 < len(finished_before) < len(frame)

    subprocess.run(_sweep_command(path, killed, executor, workers=2), check=True, capture_output=True)
    after = RunStore(store_file).runs_frame()
    assert (after["status"] == "complete").all()
    attempts = dict(zip(after["run_id"], after["attempts"]))
    assert all(attempts[run_id] == 1 for run_id in finished_before)  # nothing finished was repeated
    assert _final_table(killed).equals(_final_table(reference))  # nothing lost, numbers identical


def test_two_sweeps_share_one_store(tiny_config, tmp_path):
    study = _study(tiny_config, epochs=2)
    path = tmp_path / "study.yaml"
    path.write_text(study.to_yaml())
    workdir = tmp_path / "shared"
    processes = [subprocess.Popen(_sweep_command(path, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(2)]
    for p in processes:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    frame = RunStore(store_path(workdir)).runs_frame()
    assert len(frame) == 12 and (frame["status"] == "complete").all()
    assert (frame["attempts"] == 1).all()  # every run trained by exactly one of the two sweeps


def test_local_pool_equals_serial(tiny_config, tmp_path):
    study = _study(tiny_config, epochs=1, seeds=(0,))
    sweep(study, tmp_path / "serial", SerialExecutor())
    sweep(study, tmp_path / "pool", LocalPoolExecutor(workers=2, threads=1))
    assert _final_table(tmp_path / "pool").equals(_final_table(tmp_path / "serial"))


@pytest.mark.ray
def test_ray_executor_runs_the_smoke_study(tiny_config, tmp_path):
    ray = pytest.importorskip("ray")
    from samscale.sweep.executors import RayExecutor

    study = _study(tiny_config, epochs=1, seeds=(0,))
    sweep(study, tmp_path / "serial", SerialExecutor())
    try:
        summary = sweep(study, tmp_path / "ray", RayExecutor(init_kwargs=dict(
            num_cpus=2, include_dashboard=False, log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})))
    finally:
        ray.shutdown()
    assert summary.count("complete") == 6
    assert _final_table(tmp_path / "ray").equals(_final_table(tmp_path / "serial"))
    assert list(RunStore(store_path(tmp_path / "ray")).history(summary.outcomes[0].run_id)["epoch"]) == [1]


def test_end_of_training_analysis_is_stored_and_plotted(tiny_config, tmp_path):
    from samscale.report.study_report import build_study_report

    base = dict(tiny_config, analysis={"what": ["lambda_max", "nonuniformity"], "n_examples": 32})
    study = Study(name="curv", base=base, grid={"model.size": [0.25, 0.5], "train.seed": [0]},
                  arms=[{"name": "sgd", "set": {"optim.name": "sgd"}},
                        {"name": "sam", "set": {"optim.name": "sam", "optim.rho": 0.05}}])
    sweep(study, tmp_path, SerialExecutor())
    frame = RunStore(store_path(tmp_path)).runs_frame("curv")
    assert (frame["analysis.lambda_max"] > 0).all() and frame["analysis.s2"].notna().all()
    html = build_study_report(tmp_path, command="test").read_text()
    assert "lambda_max" in html and "s2" in html
    assert (tmp_path / "report" / "figures" / "lambda_max_vs_params.png").exists()
