"""What every experiment recipe shares: picking its budget by name, strict JSON output, a standard report header.

An experiment is a function `run_*(budget, out, on_progress)` that writes `results.json` (every measured number next
to the theory's or the paper's prediction), figures, report.md and report.html (`stability.report.write_pages`) into
`out` and returns the path of report.html.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from samscale.errors import ConfigError
from samscale.fileio import write_text

Progress = Callable[[str], None]
B = TypeVar("B")


def pick_budget(budgets: Mapping[str, B], name: str, experiment: str) -> B:
    """`budgets[name]`, or a ConfigError naming the experiment and the valid budgets."""
    if name not in budgets:
        raise ConfigError(f"unknown budget {name!r} for the {experiment} experiment; valid: {', '.join(budgets)}")
    return budgets[name]


def json_safe(value: Any) -> Any:
    """Strict JSON: NaN becomes null and ±inf the strings "inf"/"-inf"; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write `payload` as strict, indented JSON (see `json_safe`) and return the path."""
    return write_text(path, json.dumps(json_safe(dict(payload)), indent=1, allow_nan=False))


def standard_header(name: str, budget: str, description: str, out: Path, seconds: float) -> dict[str, str]:
    """The report header rows every experiment starts with: command, budget, wall time, software, date."""
    return {
        "command": f"samscale reproduce {name} --budget {budget} --out {out}",
        "budget": f"{budget}: {description}",
        "wall time": f"{seconds:.1f} s (one torch thread: the tensors are small)",
        "software": f"torch {torch.__version__}",
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
    }
