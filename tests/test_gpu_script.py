"""benchmarks/gpu.sh: it parses, its timeouts fit one 9-minute device call, its Python half runs on the CPU
(--cpu-dry-run) and writes its results and summary; the whole script's dry run is the slow test."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_scripts_timeouts_fit_nine_minutes(monkeypatch):
    text = SCRIPT.read_text()
    timeouts = [int(t) for t in re.findall(r"^\s*timeout (\d+) ", text, flags=re.M)]
    assert len(timeouts) == 4 and sum(timeouts) <= 9 * 60  # install, tests, checks, summary
    checks_timeout = int(re.search(r"timeout (\d+) \"\$PY\" benchmarks/gpu_checks.py", text).group(1))
    budget = float(re.search(r"--budget-s (\d+)", text).group(1))
    assert budget < checks_timeout  # sections stop being started before the hard stop
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_checks

    assert set(gpu_checks.SHARE) == set(gpu_checks.SECTIONS)


def test_gpu_checks_dry_run_writes_results(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_checks
    import gpu_summary

    import samscale.train.loop as loop

    monkeypatch.setattr(loop, "dataset_for", loop.dataset_for)  # the sections swap the dataset: restore it after
    monkeypatch.setattr(sys, "argv", ["gpu_checks.py", "--cpu-dry-run", "--out", str(tmp_path), "--only",
                                      "projection", "hessian", "train_run", "checkpoint", "ensemble",
                                      "projection_ensemble"])
    assert gpu_checks.main() == 0
    results = json.loads((tmp_path / "gpu_results.json").read_text())
    assert results["dry_run"] is True
    projection = results["projection"]
    assert projection["runs"] == 5 * 3 * (1 + 5)  # widths × seeds × (SGD + SAM at 5 values of ρ)
    assert set(projection["epoch_s"]) == {"0.25/sgd", "0.25/sam"}
    hessian = results["hessian"]
    assert hessian["mode_used"] == "double_backward+cache"
    assert hessian["relative_error_vs_cpu_float64"] < 1e-4  # float32 products against float64 ones
    runs = results["train_run"]
    assert {runs[p]["precision"] for p in ("highest", "tf32", "bf16", "fp16")} == {"highest", "tf32", "bf16", "fp16"}
    assert runs["finite"] and runs["highest"]["final_train_loss"] == runs["tf32"]["final_train_loss"]  # CPU: no TF32
    assert results["checkpoint"]["max_train_loss_difference"] == 0.0  # resumed = uninterrupted, on one CPU
    assert results["ensemble"]["max_final_train_loss_difference"] < 1e-4
    packed = results["projection_ensemble"]
    assert packed["runs"] == 90 and packed["max_pack_params"] == 500_000  # the CPU budget without a GPU
    assert packed["per_width"]["0.25"]["members"] == 6  # 18 runs of 61k parameters in packs within 500k
    assert "hessian" in (tmp_path / "gpu_results.md").read_text()
    summary = gpu_summary.summarize(tmp_path, 0)
    assert all(check["status"] == "ok" for check in summary["checks"].values())
    assert summary["checks"]["checkpoint"]["max_train_loss_difference"] == 0.0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_whole_script_runs_on_the_cpu(tmp_path):
    """`bash benchmarks/gpu.sh --cpu-dry-run`: every section at toy sizes (the pool with 2 runs on one pretended
    GPU included), the CUDA tests collected and skipped, and the JSON summary."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-dry-run"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_summary.json").read_text())
    assert summary["dry_run"] is True and summary["exit_status"] == 0
    assert summary["tests"]["skipped"] >= 8 and "failed" not in summary["tests"]
    assert set(summary["checks"]) == {"sam_sgd", "pipeline", "precision", "projection", "hessian", "train_run",
                                      "checkpoint", "ensemble", "pool", "projection_ensemble"}
    assert all(check["status"] == "ok" for check in summary["checks"].values())
    assert summary["checks"]["pool"]["workers_saw"] == ["0"]  # both workers were given the one "GPU"
    assert summary["checks"]["pool"]["statuses"] == ["complete", "complete"]
