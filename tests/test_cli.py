"""The command line as a user types it: train, runs, models, sweep/report, reproduce, analyze, errors."""
import json

import pandas as pd
import pytest
import yaml

from samscale.cli import main
from samscale.models.registry import param_count
from samscale.workdir import store_path
from samscale.store import RunStore


@pytest.fixture
def config_file(tmp_path, tiny_config):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    return path


def test_train_runs_and_models(config_file, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert main(["train", str(config_file), "--set", "optim.name=sam", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "epoch   3/3" in out and "complete" in out
    assert main(["train", str(config_file), "--set", "optim.name=sam", "--workdir", str(workdir)]) == 0
    assert "nothing to do" in capsys.readouterr().out  # finished runs are not trained twice
    assert main(["runs", "--workdir", str(workdir)]) == 0
    assert "sam(rho=0.05)" in capsys.readouterr().out
    assert main(["models", "--family", "mlp"]) == 0
    out = capsys.readouterr().out
    assert f"{param_count('mlp', 1):,d}" in out and "266,610" in out


def test_bad_config_is_a_clear_error(config_file, tmp_path, capsys):
    code = main(["train", str(config_file), "--set", "optim.name=adam", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "optim.name" in err and "'adam'" in err and "'sam'" in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["reproduce", "mnist-mpl"]) == 2
    assert "valid: mnist-mlp" in capsys.readouterr().err


def test_reproduce_list_and_smoke_report(tmp_path, capsys):
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    for name in ("mnist-mlp", "cifar10-resnet18", "imagenet-resnet50", "rho-star", "stability"):
        assert name in listing
    out = tmp_path / "smoke"
    assert main(["reproduce", "mnist-mlp", "--budget", "smoke", "--out", str(out), "--executor", "serial"]) == 0
    assert "report:" in capsys.readouterr().out
    html = (out / "report" / "report.html").read_text()
    assert "mnist-mlp" in html and "18 of 18 runs complete" in html
    summary = (out / "report" / "summary.csv").read_text()
    assert "61035" in summary.replace(",", "") or "61,035" in summary


def test_report_of_half_finished_study_renders(tmp_path, capsys):
    out = tmp_path / "half"
    assert main(["reproduce", "mnist-mlp", "--budget", "smoke", "--out", str(out), "--executor", "serial"]) == 0
    store = RunStore(store_path(out))
    frame = store.runs_frame()
    store.reset(list(frame["run_id"][:5]))  # pretend five runs never finished
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    html = (out / "report" / "report.html").read_text()
    assert "13 of 18 runs complete" in html
    # the x-axis can count non-zero weights instead (biases of units that never fired stay exactly 0)
    assert main(["report", str(out), "--params", "nonzero"]) == 0
    counted = set(pd.read_csv(out / "report" / "summary.csv")["n_params"].dropna().astype(int))
    nonzero = set(frame["n_nonzero"].dropna().astype(int))
    assert counted and counted <= nonzero and not counted <= set(frame["n_params"].astype(int))


def test_analyze_a_run_from_the_store(config_file, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert main(["train", str(config_file), "--workdir", str(workdir)]) == 0
    run_id = RunStore(store_path(workdir)).runs_frame()["run_id"].iloc[0]
    capsys.readouterr()
    assert main(["analyze", run_id[:8], "--workdir", str(workdir), "--what", "lambda_max,trace",
                 "--n-examples", "64"]) == 0
    out = capsys.readouterr().out
    assert "lambda_max" in out and "trace" in out
    report = json.loads((workdir / "analysis" / run_id / "analysis.json").read_text())
    assert report["run_id"] == run_id and report["lambda_max"]["value"] > 0
    assert (workdir / "analysis" / run_id / "eigenvalues.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    frame = RunStore(store_path(workdir)).runs_frame()
    assert frame["analysis.lambda_max"].iloc[0] == pytest.approx(report["lambda_max"]["value"])


def test_recipe_without_its_data_says_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path / "empty-data-home"))
    code = main(["reproduce", "imagenet-resnet50", "--budget", "smoke", "--out", str(tmp_path / "in")])
    out = capsys.readouterr().out
    assert code == 2 and "imagenet" in out.lower() and "not available" in out


@pytest.mark.slow
def test_rho_star_combines_the_tasks_whose_data_exist(tmp_path, capsys, monkeypatch):
    out = tmp_path / "rho"
    assert main(["reproduce", "rho-star", "--budget", "smoke", "--out", str(out), "--executor", "serial"]) == 0
    index = (out / "index.md").read_text()
    assert "mnist-mlp" in index and "cifar10-resnet18" in index and "imagenet" not in index
    html = (out / "cifar10-resnet18" / "report" / "report.html").read_text()
    assert "stand-in for cifar10" in html
