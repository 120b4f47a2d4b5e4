"""Graph convolutional network (Kipf & Welling 2017) for graph classification, on concatenated graph batches.

A batch is a `samscale.data.graphs.GraphSet`: the nodes of all its graphs in one (N, F) array (column 0 is 1 for
every atom, as the other 30 one-hot features leave room for), each bond once as local endpoints, and offsets per
graph. Nothing is padded. The normalized adjacency Â = D^-½ (A + I) D^-½ is applied by index-based aggregation:
(Â Z)_i = Z_i / d_i + Σ_{j ~ i} Z_j / √(d_i d_j), with d_i = 1 + the degree of node i, summed with `index_add_` over
both directions of each bond (bonds are distinct and never loops, as in molecules). Mean pooling sums each graph's
nodes with `index_add_` and divides by its atom count.

Architecture: node embedding Linear(F → h); `depth` GCN layers H ← H + ReLU(Â (H W + b)) (residual); mean pooling
over each graph's nodes; Linear(h → classes). Width h is the family's ladder key (≈5h² parameters at depth 5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samscale.data.graphs import GraphSet
from samscale.models.init import flax_init_, require_positive_int


class GCN(nn.Module):
    """Residual GCN with mean pooling per graph; input a GraphSet of graphs with `in_features` node features."""

    def __init__(self, width: int, depth: int, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.embed = nn.Linear(in_features, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, graphs: GraphSet) -> Tensor:
        if not isinstance(graphs, GraphSet) or graphs.nodes.shape[1] != self.in_features:
            got = graphs.nodes.shape if isinstance(graphs, GraphSet) else type(graphs).__name__
            raise ValueError(f"GCN expects a GraphSet with {self.in_features} node features, got {got}")
        dtype = self.embed.weight.dtype
        edges = graphs.global_edges()
        source, target = edges[:, 0], edges[:, 1]
        n = graphs.nodes.shape[0]
        degree = torch.ones(n, dtype=dtype, device=graphs.device)
        ones = torch.ones(len(edges), dtype=dtype, device=graphs.device)
        degree = degree.index_add(0, source, ones).index_add(0, target, ones)
        scale = degree.rsqrt()
        weight = (scale[source] * scale[target]).unsqueeze(1)
        self_weight = (1.0 / degree).unsqueeze(1)
        h = self.embed(graphs.nodes.to(dtype))
        for layer in self.layers:
            z = layer(h)
            mixed = (z * self_weight).index_add(0, target, z[source] * weight).index_add(0, source, z[target] * weight)
            h = h + F.relu(mixed)
        counts = graphs.node_counts().to(dtype).clamp_min(1.0).unsqueeze(1)
        pooled = h.new_zeros(len(graphs), h.shape[1]).index_add(0, graphs.graph_index(), h) / counts
        return self.head(pooled)


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
