"""Cells: the search cell (all candidates on every edge) and the discrete cell of a genotype."""
from __future__ import annotations

import torch
from torch import nn

from ..ir.model import CellBlock, CellIR
from ..ops import Identity, create_op
from .macro import make_preprocess
from .mixed import MixedEdge


def real_candidates(cell: CellIR, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean ``shape`` (default: edges x most candidates): True where a column of an edge's α
    row is one of its candidates (rows shorter than the widest are padded)."""
    if shape is None:
        shape = (max(e.row for e in cell.edges) + 1, max(len(e.candidates) for e in cell.edges))
    mask = torch.zeros(shape, dtype=torch.bool)
    for e in cell.edges:
        mask[e.row, :len(e.candidates)] = True
    return mask


class _CellBase(nn.Module):
    def __init__(self, cell: CellIR, block: CellBlock, affine: bool, track: bool):
        super().__init__()
        self.n_inputs = cell.n_inputs
        self.n_total = cell.n_inputs + cell.n_nodes
        self.output_nodes = cell.output_nodes
        self.mean = cell.combine == "mean"
        self.preprocess = nn.ModuleList(
            make_preprocess(k, c, block.C, affine, track)
            for k, c in zip(block.preprocess, block.C_inputs))

    def _combine(self, terms: list[torch.Tensor]) -> torch.Tensor:
        out = terms[0]
        for t in terms[1:]:
            out = out + t
        return out / len(terms) if self.mean else out

    def _output(self, states: list[torch.Tensor]) -> torch.Tensor:
        if len(self.output_nodes) == 1:
            return states[self.output_nodes[0]]
        return torch.cat([states[n] for n in self.output_nodes], dim=1)


class EdgeDropPath(nn.Module):
    """RobustDARTS' search-time drop-path: each edge's mixed output is dropped, per sample,
    with probability ``p`` and the rest scaled by 1/(1-p), in training. The masks of all
    edges are drawn at once per cell forward, (edges, batch) in α-row order, so the plain and
    the fused cell drop the same edges of the same samples.

    ``p`` is a 0-dim buffer (not saved) that a compiled cell or a CUDA graph reads where it
    is; ``active`` is fixed for a whole search (on whenever its schedule drops paths, even at
    p = 0 in the first epoch), so neither re-traces nor re-captures as ``p`` rises."""

    def __init__(self, edges: int):
        super().__init__()
        self.edges = edges
        self.register_buffer("p", torch.zeros(()), persistent=False)
        self.active = False

    def set(self, p: float, active: bool) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p.fill_(p)
        self.active = bool(active)

    def masks(self, x: torch.Tensor) -> torch.Tensor | None:
        """(edges, batch, 1, 1, 1) keep-masks over 1-p for a batch like ``x``, or None."""
        if not (self.training and self.active):
            return None
        keep = 1.0 - self.p
        m = torch.rand(self.edges, x.shape[0], device=x.device, dtype=keep.dtype) < keep
        return (m / keep).to(x.dtype).view(self.edges, x.shape[0], 1, 1, 1)


class SearchCell(_CellBase):
    """Every edge of the cell type, in canonical (alpha row) order."""

    def __init__(self, cell: CellIR, block: CellBlock, affine: bool, track: bool, pool_bn: bool,
                 edge_cls=MixedEdge, node_norm: bool = False):
        super().__init__(cell, block, affine, track)
        self.group = cell.group
        self.edges = nn.ModuleList(
            edge_cls(e.candidates, block.C, e.stride, affine, track, pool_bn) for e in cell.edges)
        # iDARTS (Wang et al.): a parameter-free BN on every intermediate node keeps node norms
        # balanced; identity otherwise.
        self.node_norm = nn.ModuleList(
            nn.BatchNorm2d(block.C, affine=False, track_running_stats=track) if node_norm
            else nn.Identity() for _ in cell.intermediate)
        # For each node, the (row, source) pairs of its incoming edges.
        self.incoming = [[(e.row, e.src) for e in cell.edges if e.dst == n]
                         for n in range(self.n_total)]
        self.edge_drop = EdgeDropPath(len(self.edges))

    def forward(self, inputs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        states = [p(x) for p, x in zip(self.preprocess, inputs)]
        drop = self.edge_drop.masks(states[0])
        for n in range(self.n_inputs, self.n_total):
            outs = [self.edges[row](states[src], weights[row]) for row, src in self.incoming[n]]
            if drop is not None:
                outs = [out * drop[row] for out, (row, _) in zip(outs, self.incoming[n])]
            node = self._combine(outs)
            states.append(self.node_norm[n - self.n_inputs](node))
        return self._output(states)


class DropPath(nn.Module):
    """Zero a whole sample's branch with probability ``p`` and rescale the rest (training only).

    ``p`` is a 0-dim buffer, so a compiled network reads the probability that ``set`` last gave
    instead of re-tracing whenever it changes (DARTS raises it every epoch)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("p", torch.zeros(()), persistent=False)
        self.active = False

    def set(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p.fill_(p)
        self.active = p > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.active):
            return x
        keep = 1.0 - self.p            # float32 even under bf16 autocast: an exact rate
        mask = torch.rand(x.size(0), 1, 1, 1, device=x.device, dtype=keep.dtype) < keep
        return x * (mask / keep).to(x.dtype)


class DiscreteCell(_CellBase):
    """The cell of a genotype: only the chosen op on each kept edge, affine BN."""

    def __init__(self, cell: CellIR, block: CellBlock, chosen: tuple[tuple[str, int, int], ...]):
        super().__init__(cell, block, affine=True, track=True)
        stride = {(e.src, e.dst): e.stride for e in cell.edges}
        self.ops = nn.ModuleList()
        self.drop = nn.ModuleList()
        self.incoming: list[list[tuple[int, int]]] = [[] for _ in range(self.n_total)]
        for i, (op, src, dst) in enumerate(chosen):
            module = create_op(op, block.C, block.C, stride[(src, dst)], affine=True, track=True)
            self.ops.append(module)
            # DARTS exempts identity ops from drop-path.
            self.drop.append(nn.Identity() if isinstance(module, Identity) else DropPath())
            self.incoming[dst].append((i, src))
        for n in range(self.n_inputs, self.n_total):
            if not self.incoming[n]:
                raise ValueError(f"node {n} of cell '{cell.name}' has no chosen input edge")

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        states = [p(x) for p, x in zip(self.preprocess, inputs)]
        for n in range(self.n_inputs, self.n_total):
            states.append(self._combine(
                [self.drop[i](self.ops[i](states[src])) for i, src in self.incoming[n]]))
        return self._output(states)
