"""Curvature analysis of trained runs: the bridge between the trainer/store and `samscale.hessian`.

The Hessian is taken of the mean training loss over a fixed, un-augmented subset of the training split (the first
`n_examples` examples), with BatchNorm in eval mode, so the numbers describe the minimum the run ended in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor, nn

from samscale.data import Dataset
from samscale.hessian import analyze
from samscale.study.spec import RunSpec


def curvature_batches(dataset: Dataset, n_examples: int, batch_size: int = 512) -> list[tuple[Tensor, Tensor]]:
    """The first `n_examples` training examples (no augmentation), in batches."""
    x, y = dataset.train.x[:n_examples], dataset.train.y[:n_examples]
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def scalar_summary(report: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of an `analyze` report, flat: lambda_max, trace, s2, moment_2, sharpness, …"""
    scalars: dict[str, float] = {"loss": float(report["loss"])}
    for name in ("lambda_max", "trace", "frobenius", "worst_case_sharpness", "average_case_sharpness"):
        if name in report:
            scalars[name] = float(report[name]["value"])
    for k, entry in report.get("moments", {}).items():
        scalars[f"moment_{k}"] = float(entry["value"])
    for k, value in report.get("nonuniformity", {}).items():
        scalars[f"s{k}"] = float(value)
    return scalars


def analyze_model(
    spec: RunSpec, model: nn.Module, dataset: Dataset, loss_fn, what: Sequence[str] | None = None,
    n_examples: int | None = None,
) -> dict[str, Any]:
    """Run the spec's (or the given) analyses on a trained model; returns the full JSON-serializable report."""
    batches = curvature_batches(dataset, n_examples or spec.analysis.n_examples)
    model = model.to("cpu").eval()
    return analyze(model, loss_fn, batches, what=list(what or spec.analysis.what), top_k=spec.analysis.top_k,
                   seed=spec.train.seed)


def _load_target(target: str, workdir: str | Path) -> tuple[RunSpec, dict[str, Tensor]]:
    """(spec, model weights) from a checkpoint path, or from a run id (prefix) in the work directory's store."""
    from samscale.study.executors import store_path_in
    from samscale.study.store import RunStore
    from samscale.train.checkpoint import load_checkpoint
    from samscale.train.loop import checkpoint_path

    path = Path(target)
    if not path.is_file():
        store = RunStore(store_path_in(workdir))
        run_id = store.find(target)
        path = checkpoint_path(workdir, run_id)
        if not path.is_file():
            raise FileNotFoundError(f"run {run_id} has no checkpoint at {path}")
    state = load_checkpoint(path)
    if state is None or "spec" not in state:
        raise FileNotFoundError(f"{path} is not a samscale checkpoint")
    return RunSpec.model_validate_json(state["spec"]), state["model"]


def analyze_target(
    target: str, *, workdir: str | Path, what: Sequence[str], n_examples: int, out: str | Path | None = None
) -> dict[str, Any]:
    """Analyze a run (id or checkpoint): writes analysis.json and figures, stores scalars; returns paths + scalars."""
    from samscale.report.analysis_figures import write_analysis_figures
    from samscale.study.executors import store_path_in
    from samscale.study.store import RunStore
    from samscale.train.loop import build_model_for, dataset_for, loss_function

    spec, weights = _load_target(target, workdir)
    dataset = dataset_for(spec)
    model = build_model_for(spec, dataset)
    model.load_state_dict(weights)
    report = analyze_model(spec, model, dataset, loss_function(dataset), what, n_examples)
    scalars = scalar_summary(report)
    out = Path(out) if out else Path(workdir) / "analysis" / spec.run_id
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "analysis.json"
    json_path.write_text(json.dumps({"run_id": spec.run_id, "label": spec.label(), **report}, indent=1))
    figures = write_analysis_figures(report, out, title=spec.label())
    if store_path_in(workdir).exists():
        store = RunStore(store_path_in(workdir))
        if store.status(spec.run_id) is not None:
            for name, value in scalars.items():
                store.record_analysis(spec.run_id, name, value)
    return {"scalars": scalars, "json": json_path, "figures": figures}
