"""The run store: every run's spec, status, per-epoch history, final metrics, analyses and code version."""
from samscale.store.sqlite import RunStore

__all__ = ["RunStore"]
