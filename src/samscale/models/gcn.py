"""Graph convolutional network (Kipf & Welling 2017) for graph classification, on padded dense graph batches.

A batch of graphs is one tensor of shape (B, N, F + N): for each graph, N node slots (padded with zero rows), each
row holding the node's F features followed by its row of the normalized adjacency Â = D^-½ (A + I) D^-½ (zero for
padded slots). Feature column 0 is 1 for a real node and 0 for padding, which is how pooling finds the real nodes.
This packs graphs into the same in-memory (x, y) batches as images, so the trainer, SAM and the Hessian code need
no graph-specific path (`samscale.data.molecules.pack_graphs` writes this layout).

Architecture: node embedding Linear(F → h); `depth` GCN layers H ← H + ReLU(Â (H W + b)) (residual);
mean pooling over real nodes; Linear(h → classes). Width h is the family's ladder key (≈5h² parameters at depth 5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samscale.models.init import flax_init_, require_positive_int


class GCN(nn.Module):
    """Residual GCN with mean pooling over real nodes; input (B, N, F + N) as described in the module docstring."""

    def __init__(self, width: int, depth: int, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.embed = nn.Linear(in_features, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[2] != self.in_features + x.shape[1]:
            raise ValueError(f"GCN expects (batch, nodes, {self.in_features} + nodes) inputs, got {tuple(x.shape)}")
        features, adjacency = x[..., : self.in_features], x[..., self.in_features:]
        mask = features[..., :1]  # (B, N, 1): 1 for real nodes
        real = (mask[..., 0] > 0,)  # the linear maps run on real nodes only: padding is most of a batch's slots
        h = self._scatter(self.embed(features[real]), real, features.shape[:2])
        for layer in self.layers:
            h = h + F.relu(adjacency @ self._scatter(layer(h[real]), real, features.shape[:2])) * mask
        pooled = h.sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.head(pooled)

    @staticmethod
    def _scatter(values: Tensor, real: tuple[Tensor], batch_nodes: torch.Size) -> Tensor:
        """Rows for the real nodes placed into a zero (B, N, h) tensor (padded slots stay 0)."""
        return values.new_zeros(*batch_nodes, values.shape[-1]).index_put(real, values)


def _checked(width: int, depth: int, in_features: int, num_classes: int) -> None:
    for name, value in (("width", width), ("depth", depth), ("in_features", in_features),
                        ("num_classes", num_classes)):
        require_positive_int(name, value)


def gcn(
    width: int = 300,
    depth: int = 5,
    in_features: int = 40,
    num_classes: int = 3,
    *,
    generator: torch.Generator | None = None,
) -> GCN:
    """Build a Flax-initialized GCN of hidden `width` and `depth` graph convolutions."""
    _checked(width, depth, in_features, num_classes)
    return flax_init_(GCN(width, depth, in_features, num_classes), generator)


def gcn_param_count(width: int = 300, depth: int = 5, in_features: int = 40, num_classes: int = 3) -> int:
    """Number of parameters of `gcn(width, depth, in_features, num_classes)`, without building it."""
    _checked(width, depth, in_features, num_classes)
    return (in_features + 1) * width + depth * (width + 1) * width + (width + 1) * num_classes
