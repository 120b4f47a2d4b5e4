"""The SAM optimizer family (SAM, USAM, ASAM), the BatchNorm guard for the perturbed pass, a one-call SAM update
(m-sharpness, gradient accumulation, GradScaler) and the gradient sync for data-parallel SAM."""
from samscale.optim.bn import MergedBatchStats, frozen_bn_stats
from samscale.optim.msharpness import sam_update
from samscale.optim.sam import SAM
from samscale.optim.sync import GradientSync

__all__ = ["SAM", "GradientSync", "MergedBatchStats", "frozen_bn_stats", "sam_update"]
