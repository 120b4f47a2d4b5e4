"""`samscale analyze`: curvature analysis of a finished run (by id) or of a checkpoint file, written to disk.

Writes `analysis.json` and figures under the work directory and records the headline scalars with the run in the
store. The measurement itself is `samscale.train.curvature.analyze_model`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError
from torch import Tensor

from samscale.errors import ConfigError, format_validation_error
from samscale.fileio import write_text
from samscale.hessian.analyze import scalar_summary
from samscale.report.analysis_figures import write_analysis_figures
from samscale.spec.run import RunSpec
from samscale.store import RunStore
from samscale.train.checkpoint import load_checkpoint
from samscale.train.curvature import analyze_model
from samscale.train.loop import build_model_for, dataset_for, loss_function, resolve_device
from samscale.workdir import analysis_dir, checkpoint_path, store_path


def _load_target(target: str, workdir: str | Path) -> tuple[RunSpec, dict[str, Tensor]]:
    """(spec, model weights) from a checkpoint path, or from a run id (prefix) in the work directory's store."""
    path = Path(target)
    if not path.is_file():
        if not store_path(workdir).is_file():
            raise FileNotFoundError(f"{target!r} is neither a checkpoint file nor a run id (no run store at "
                                    f"{store_path(workdir)}; pass --workdir)")
        store = RunStore(store_path(workdir))
        run_id = store.find(target)
        path = checkpoint_path(workdir, run_id)
        if not path.is_file():
            raise FileNotFoundError(f"run {run_id} has no checkpoint at {path}")
    state = load_checkpoint(path)
    if state is None or "spec" not in state or "model" not in state:
        raise FileNotFoundError(f"{path} is not a samscale checkpoint (no spec and model weights in it)")
    try:
        return RunSpec.model_validate_json(state["spec"]), state["model"]
    except ValidationError as err:
        raise ConfigError(f"{path}: the run spec stored in it is not valid; "
                          f"{format_validation_error(err, model=RunSpec)}") from None


def analyze_target(
    target: str, *, workdir: str | Path, what: Sequence[str], n_examples: int, out: str | Path | None = None
) -> dict[str, Any]:
    """Analyze a run (id or checkpoint): writes analysis.json and figures, stores scalars; returns paths + scalars."""
    spec, weights = _load_target(target, workdir)
    dataset = dataset_for(spec)
    model = build_model_for(spec, dataset)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ConfigError(f"the weights in {target} do not fit the model of its spec ({spec.label()}): "
                          f"{' '.join(str(err).split())[:400]}") from None
    report = analyze_model(spec, model, dataset, loss_function(dataset), what, n_examples,
                           device=resolve_device(spec.runtime.device))
    scalars = scalar_summary(report)
    out = Path(out) if out else analysis_dir(workdir, spec.run_id)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_text(out / "analysis.json", json.dumps({"run_id": spec.run_id, "label": spec.label(), **report},
                                                             indent=1))
    figures = write_analysis_figures(report, out, title=spec.label())
    if store_path(workdir).exists():
        store = RunStore(store_path(workdir))
        if store.status(spec.run_id) is not None:
            for name, value in scalars.items():
                store.record_analysis(spec.run_id, name, value)
    return {"scalars": scalars, "json": json_path, "figures": figures}
