"""The run store: every run's spec, status, per-epoch history, final metrics, analyses and code version."""
from samscale.store.sqlite import Claim, ClaimFence, RunStore

__all__ = ["Claim", "ClaimFence", "RunStore"]
