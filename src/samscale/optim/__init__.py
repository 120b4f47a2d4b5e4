"""The SAM optimizer family (SAM, USAM, ASAM), the BatchNorm guard for the perturbed pass and a one-call SAM update."""
from samscale.optim.bn import frozen_bn_stats
from samscale.optim.msharpness import sam_update
from samscale.optim.sam import SAM

__all__ = ["SAM", "frozen_bn_stats", "sam_update"]
