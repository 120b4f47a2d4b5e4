"""benchmarks/gpu.sh parses, and its Python half runs on the CPU (--cpu-dry-run) and writes its results files."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")], check=True)


def test_gpu_checks_dry_run_writes_results(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_checks

    monkeypatch.setattr(sys, "argv", ["gpu_checks.py", "--cpu-dry-run", "--out", str(tmp_path),
                                      "--only", "projection", "hessian"])
    assert gpu_checks.main() == 0
    results = json.loads((tmp_path / "gpu_results.json").read_text())
    assert results["dry_run"] is True
    projection = results["projection"]
    assert projection["runs"] == 5 * 3 * (1 + 5)  # widths × seeds × (SGD + SAM at 5 values of ρ)
    assert set(projection["epoch_s"]) == {"0.25/sgd", "0.25/sam"}
    hessian = results["hessian"]
    assert hessian["mode_used"] == "double_backward+cache"
    assert hessian["relative_error_vs_cpu_float64"] < 1e-4  # float32 products against float64 ones
    assert "hessian" in (tmp_path / "gpu_results.md").read_text()
