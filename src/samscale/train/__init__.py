"""Training: one fully specified run (`train_run`), its schedules, metrics and checkpoints."""
from samscale.train.loop import RunResult, train_run

__all__ = ["RunResult", "train_run"]
