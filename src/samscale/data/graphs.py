"""Graphs concatenated without padding: a whole split, or one batch, as node and edge arrays with offsets.

A `GraphSet` of G graphs holds every node of every graph in one (nodes, F) uint8 array of one-hot features, every
undirected edge once in one (edges, 2) int32 array of endpoints *local* to its graph, and two offset vectors
`node_ptr`, `edge_ptr` of length G + 1 (graph g owns nodes node_ptr[g]:node_ptr[g + 1], edges likewise). Nothing
is padded: memory grows with the atoms and bonds present, not with the largest molecule, and a split of molecules
costs F + 8·bonds/atoms bytes per atom plus 16 bytes per graph.

It stands where an input tensor stands in a `Split`: `len`, `shape[0]`, indexing by a slice or an index tensor (the
selected graphs, renumbered, in that order), `.to(device)`. So `TensorLoader`, validation carving, label noise, SAM
with m-sharpness and the trainer batch graphs exactly as they batch images, and a batch stays an (x, y) pair. The
model (`samscale.models.gcn`) aggregates over `global_edges()` with `index_add_`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class GraphSet:
    """G graphs: `nodes` (N, F) features, `edges` (E, 2) local endpoints, `node_ptr` and `edge_ptr` (G + 1,)."""

    nodes: Tensor
    edges: Tensor
    node_ptr: Tensor
    edge_ptr: Tensor

    def __post_init__(self) -> None:
        g = self.node_ptr.shape[0] - 1
        if g < 0 or self.edge_ptr.shape[0] != g + 1:
            raise ValueError(f"node_ptr ({tuple(self.node_ptr.shape)}) and edge_ptr ({tuple(self.edge_ptr.shape)}) "
                             "must both have one entry per graph plus one")
        if self.nodes.dim() != 2 or self.edges.dim() != 2 or self.edges.shape[1] != 2:
            raise ValueError(f"nodes must be (N, F) and edges (E, 2), got {tuple(self.nodes.shape)} and "
                             f"{tuple(self.edges.shape)}")
        if int(self.node_ptr[-1]) != self.nodes.shape[0] or int(self.edge_ptr[-1]) != self.edges.shape[0]:
            raise ValueError(f"offsets end at {int(self.node_ptr[-1])} nodes and {int(self.edge_ptr[-1])} edges, the "
                             f"arrays hold {self.nodes.shape[0]} and {self.edges.shape[0]}")

    @classmethod
    def from_graphs(cls, graphs: list[tuple[Tensor, Tensor]] | list, num_features: int) -> GraphSet:
        """Concatenate (features (n, F), edges (e, 2) local) pairs; features are stored as uint8 (one-hot 0/1)."""
        node_counts = torch.tensor([len(features) for features, _ in graphs], dtype=torch.int64)
        edge_counts = torch.tensor([len(edges) for _, edges in graphs], dtype=torch.int64)
        nodes = torch.cat([torch.as_tensor(f).reshape(-1, num_features).to(torch.uint8) for f, _ in graphs]) \
            if graphs else torch.zeros(0, num_features, dtype=torch.uint8)
        edges = torch.cat([torch.as_tensor(e).reshape(-1, 2).to(torch.int32) for _, e in graphs]) \
            if graphs else torch.zeros(0, 2, dtype=torch.int32)
        return cls(nodes, edges, _offsets(node_counts), _offsets(edge_counts))

    @classmethod
    def concat(cls, parts: list[GraphSet], num_features: int) -> GraphSet:
        """The graphs of `parts`, in order, as one GraphSet."""
        if not parts:
            return cls.from_graphs([], num_features)
        node_counts = torch.cat([part.node_counts() for part in parts])
        edge_counts = torch.cat([part.edge_ptr[1:] - part.edge_ptr[:-1] for part in parts])
        return cls(torch.cat([part.nodes for part in parts]), torch.cat([part.edges for part in parts]),
                   _offsets(node_counts), _offsets(edge_counts))

    # -- the tensor-like surface a Split and a loader use ----------------------------------------------------
    def __len__(self) -> int:
        return self.node_ptr.shape[0] - 1

    @property
    def shape(self) -> tuple[int]:
        """(G,): graphs are the examples."""
        return (len(self),)

    def dim(self) -> int:
        return 1

    @property
    def device(self) -> torch.device:
        return self.nodes.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> GraphSet:
        """All four arrays on `device`."""
        return GraphSet(*(t.to(device, non_blocking=non_blocking) for t in
                          (self.nodes, self.edges, self.node_ptr, self.edge_ptr)))

    def __getitem__(self, index: slice | Tensor) -> GraphSet:
        """The graphs at `index` (a slice with step 1, or a 1-D integer tensor), renumbered in that order."""
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError(f"graph slices must have step 1, got {step}")
            index = torch.arange(start, max(start, stop), device=self.node_ptr.device)
        index = torch.as_tensor(index, device=self.node_ptr.device).long().reshape(-1)
        node_rows, node_counts = _ranges(self.node_ptr, index)
        edge_rows, edge_counts = _ranges(self.edge_ptr, index)
        return GraphSet(self.nodes[node_rows], self.edges[edge_rows], _offsets(node_counts), _offsets(edge_counts))

    def split(self, size: int) -> tuple[GraphSet, ...]:
        """Consecutive pieces of `size` graphs (the last may be smaller), as `Tensor.split`."""
        return tuple(self[start:start + size] for start in range(0, len(self), size))

    # -- what a graph network needs --------------------------------------------------------------------------
    def node_counts(self) -> Tensor:
        """Atoms per graph, (G,) int64."""
        return self.node_ptr[1:] - self.node_ptr[:-1]

    def graph_index(self) -> Tensor:
        """The graph of each node, (N,) int64."""
        return torch.repeat_interleave(torch.arange(len(self), device=self.device), self.node_counts())

    def global_edges(self) -> Tensor:
        """(E, 2) int64 endpoints as rows of `nodes` (local endpoints shifted by their graph's first node)."""
        edge_counts = self.edge_ptr[1:] - self.edge_ptr[:-1]
        shift = torch.repeat_interleave(self.node_ptr[:-1], edge_counts)
        return self.edges.long() + shift[:, None]

    def nbytes(self) -> int:
        """Bytes of the four arrays."""
        return sum(t.numel() * t.element_size() for t in (self.nodes, self.edges, self.node_ptr, self.edge_ptr))


def _offsets(counts: Tensor) -> Tensor:
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _ranges(ptr: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ptr[i]:ptr[i + 1] for each i of `index`, concatenated, and their counts."""
    starts, counts = ptr[index], ptr[index + 1] - ptr[index]
    total = int(counts.sum())
    begin = torch.cumsum(counts, 0) - counts  # where each graph's rows begin in the output
    rows = torch.arange(total, device=ptr.device) + torch.repeat_interleave(starts - begin, counts, output_size=total)
    return rows, counts


__all__ = ["GraphSet"]
