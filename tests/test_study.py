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


def test_sweep_skips_finished_runs_and_isolates_failures(tiny_config, tmp_path, monkeypatch):
    study = _study(tiny_config, epochs=1, seeds=(0,))
    first = sweep(study, tmp_path, SerialExecutor())
    assert first.count("complete") == 6 and first.skipped == 0
    again = sweep(study, tmp_path, SerialExecutor())
    assert again.skipped == 6 and again.outcomes == []
    broken = study.model_copy(update={"grid": {**study.grid, "data.train_subset": [100000000]}})
    with pytest.raises(ConfigError, match="train_subset=100000000 exceeds the 3872 training examples"):
        sweep(broken, tmp_path / "broken", SerialExecutor())  # refused before any run starts
    assert not (tmp_path / "broken").exists()

    from samscale.sweep import executors

    real = executors.train_run

    def sam_fails(spec, **kwargs):  # a failure while training, of the SAM runs only
        if spec.optim.name == "sam":
            raise RuntimeError(f"boom in {spec.run_id}\nsecond line")
        return real(spec, **kwargs)

    monkeypatch.setattr(executors, "train_run", sam_fails)
    other = study.model_copy(update={"name": "other"})
    result = sweep(other.model_copy(update={"grid": {**study.grid, "train.seed": [1]}}), tmp_path / "other",
                   SerialExecutor())
    assert result.count("failed") == 4 and result.count("complete") == 2  # errors recorded, the sweep went on
    frame = RunStore(store_path(tmp_path / "other")).runs_frame()
    for _, run in frame[frame["status"] == "failed"].iterrows():  # each run keeps its own error
        assert f"RuntimeError: boom in {run['run_id']}\nsecond line" in run["error"]


def _sweep_command(study_path, workdir, executor="serial", workers=1):
    return [sys.executable, "-m", "samscale.cli", "sweep", str(study_path), "--out", str(workdir),
            "--executor", executor, "--workers", str(workers), "--threads", "1", "--no-report"]


def _session_members(session: int) -> list[int]:
    """Pids of the live (not zombie) processes of a session, read from /proc.

    A sweep started with start_new_session=True leads its own session; its pool workers and the multiprocessing
    resource tracker inherit the session (neither calls setsid), so this finds every descendant, orphaned or not.
    """
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                alive.append(int(entry))
    return alive


def _stragglers(session: int, patience_s: float = 20.0) -> list[int]:
    """The session's processes still alive after waiting up to `patience_s` for them to go (killed, then reaped)."""
    deadline = time.time() + patience_s
    while (alive := _session_members(session)) and time.time() < deadline:
        time.sleep(0.1)
    for pid in alive:  # never leave a straggler behind for the next test
        os.kill(pid, signal.SIGKILL)
    return alive


def _final_table(workdir):
    frame = RunStore(store_path(workdir)).runs_frame("tiny")
    return frame[METRIC_COLUMNS].sort_values("run_id").reset_index(drop=True)


def _wait_until(condition, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "the sweep never reached the moment to kill it"
        time.sleep(0.01)


# When the sweep process is killed: during the pool's start-up (once the resource tracker is up, i.e. while workers
# are being spawned; once both workers exist, i.e. while they import torch; half a second later), or mid-run (a run
# finished, another part-way), after which a second sweep must finish the study, repeating and losing nothing.
KILL_MOMENTS = [("serial", "mid-run"), ("local", "mid-run"), ("local", "tracker started"),
                ("local", "workers spawned"), ("local", "workers spawned + 0.5 s")]


@pytest.mark.parametrize("executor, moment", KILL_MOMENTS)
def test_killed_sweep_leaves_no_process_and_resumes_losing_and_repeating_nothing(tiny_config, tmp_path, executor,
                                                                                 moment):
    study = _study(tiny_config, epochs=4, seeds=(0,), rhos=(0.05,))
    study = study.model_copy(update={"base": {**study.base, "data": {**study.base["data"], "train_subset": 1500}}})
    path = tmp_path / "study.yaml"
    path.write_text(study.to_yaml())
    killed = tmp_path / "killed"
    store_file = store_path(killed)
    process = subprocess.Popen(_sweep_command(path, killed, executor, workers=2), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)

    def mid_run() -> bool:
        if not store_file.exists():
            return False
        frame = RunStore(store_file).runs_frame()
        return not frame.empty and (frame["status"] == "complete").any() and (
            (frame["status"] == "running") & (frame["epochs_done"] >= 1)).any()

    try:
        if moment == "mid-run":
            _wait_until(mid_run)
        else:  # the sweep, then the resource tracker, then the two workers join the session
            _wait_until(lambda: len(_session_members(process.pid)) >= (2 if moment == "tracker started" else 4))
            time.sleep(0.5 if moment.endswith("0.5 s") else 0.0)
    finally:
        os.kill(process.pid, signal.SIGKILL)  # the sweep process only: its workers and tracker must die with it
        process.wait()
    assert _stragglers(process.pid) == []  # no orphaned worker or resource tracker lives on
    if moment != "mid-run":
        return

    reference = tmp_path / "reference"
    sweep(study, reference, SerialExecutor())
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
