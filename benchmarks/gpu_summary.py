"""The last step of benchmarks/gpu.sh: one JSON summary (gpu_summary.json) of a device call's results folder.

Reads gpu_env.txt, gpu_tests.txt (pytest's last line) and gpu_results.json from the folder given, and writes the
environment, the test counts, each check's status (ok, error, skipped) and the headline numbers.
Usage: python benchmarks/gpu_summary.py OUT_FOLDER [EXIT_STATUS_SO_FAR]
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HEADLINES = {
    "sam_sgd": ("*", "sam_over_sgd"),
    "pipeline": ("dataloader_over_resident",),
    "projection": ("projected_hours",),
    "projection_ensemble": ("projected_hours", "max_pack_params"),
    "hessian": ("relative_error_vs_cpu_float64", "product_ms"),
    "checkpoint": ("max_train_loss_difference",),
    "ensemble": ("speed_up", "max_final_train_loss_difference"),
    "pool": ("workers_saw", "statuses"),
    "train_run": ("finite",),
}


def test_counts(text: str) -> dict[str, int]:
    """pytest's closing counts ('3 passed, 2 skipped in 4.1s' → {'passed': 3, 'skipped': 2})."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text)}


def headline(section: dict, keys: tuple[str, ...]) -> dict:
    if keys[0] == "*":  # one value per case of the section
        return {case: values.get(keys[1]) for case, values in section.items() if isinstance(values, dict)}
    return {key: section.get(key) for key in keys}


def summarize(folder: Path, status: int) -> dict:
    results = json.loads((folder / "gpu_results.json").read_text()) if (folder / "gpu_results.json").is_file() else {}
    tests = (folder / "gpu_tests.txt").read_text() if (folder / "gpu_tests.txt").is_file() else ""
    checks = {}
    for name, section in results.items():
        if not isinstance(section, dict):
            continue
        state = "error" if "error" in section else "skipped" if "skipped" in section else "ok"
        checks[name] = {"status": state, **(headline(section, HEADLINES[name]) if state == "ok" and name in HEADLINES
                                            else {})}
    return {
        "environment": (folder / "gpu_env.txt").read_text().strip() if (folder / "gpu_env.txt").is_file() else None,
        "device": results.get("device"), "torch": results.get("torch"), "dry_run": results.get("dry_run"),
        "tests": test_counts(tests.strip().splitlines()[-1] if tests.strip() else ""),
        "checks": checks, "checks_total_s": results.get("total_s"), "exit_status": status,
    }


def main() -> int:
    folder = Path(sys.argv[1])
    status = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    summary = summarize(folder, status)
    (folder / "gpu_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
