"""A search cell that batches work across the edges leaving each node (the speed path).

The plain ``SearchCell`` runs every candidate of every edge separately: for NB201 that is ~115
small kernels per cell, and an eager step is bound by the CPU launching them. Here every node's
outgoing edges are computed together, which is exact:

* ReLU-conv-BN candidates (``nor_conv_1x1``, ``nor_conv_3x3``) of all edges leaving a node share
  their input, so they are one convolution with the edges' filters stacked on the output channels
  and one BN over all of them (BN is per channel, so stacking changes nothing);
* parameter-free candidates (pools, ``skip_connect`` at stride 1) give the same tensor on every
  edge leaving a node, so they run once; the DARTS supernet's BN after a pool (affine=False) also
  gives the same result for every edge (same input, same statistics), so it runs once too;
* ``none`` contributes nothing and is skipped;
* any other candidate keeps its own module per edge.

A node is then the weighted sum of its terms, one fused multiply-add each. Parameters are laid
out per source node instead of per edge, with the same total; ``load_from`` copies the weights of
a plain ``SearchCell``, which the equivalence tests use.
"""
from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ..ir.model import CellBlock, CellIR
from ..ops import op_kind
from .cells import _CellBase
from .mixed import MixedEdge

# Candidates that stack into one conv per source: name -> (kernel, padding).
RELU_CONV_BN = {"nor_conv_1x1": (1, 0), "nor_conv_3x3": (3, 1)}
SHARED_POOLS = {"avg_pool_3x3", "max_pool_3x3"}


@attrs.frozen
class _Target:
    row: int        # alpha row of the edge
    col: int        # the candidate's column in that row
    dst: int        # destination node
    slot: int       # which C-channel slice of the group's output (0 for shared outputs)


class FusedSearchCell(_CellBase):
    def __init__(self, cell: CellIR, block: CellBlock, affine: bool, track: bool, pool_bn: bool,
                 node_norm: bool = False):
        super().__init__(cell, block, affine, track)
        C = self.C = block.C
        self.group = cell.group
        self.in_degree = [len(cell.in_edges(n)) for n in range(self.n_total)]
        self.node_norm = nn.ModuleList(
            nn.BatchNorm2d(C, affine=False, track_running_stats=track) if node_norm
            else nn.Identity() for _ in cell.intermediate)
        # Per source node: a list of (kind, module key, targets); modules live in a ModuleDict.
        self.mods = nn.ModuleDict()
        self.plan: list[list[tuple[str, str, tuple[_Target, ...]]]] = []
        self.stride = []
        self.any_edge: dict[int, int] = {}
        for s in range(self.n_total):
            out = [e for e in cell.edges if e.src == s]
            stride = out[0].stride if out else 1
            self.stride.append(stride)
            by_op: dict[str, list[tuple]] = {}
            for e in out:
                self.any_edge.setdefault(e.dst, s)
                for k, name in enumerate(e.candidates):
                    by_op.setdefault(name, []).append((e, k))
            plan = []
            for name, uses in by_op.items():
                kind = op_kind(name)
                key = f"s{s}_{name}"
                if kind == "zero":
                    continue
                if name in RELU_CONV_BN:
                    k, pad = RELU_CONV_BN[name]
                    n = len(uses)
                    # NB201 convs carry a bias exactly when BN is not affine (reference 2.1).
                    self.mods[key] = nn.Sequential(
                        nn.Conv2d(C, n * C, k, stride, pad, bias=not affine),
                        nn.BatchNorm2d(n * C, affine=affine, track_running_stats=track))
                    targets = tuple(_Target(e.row, c, e.dst, i) for i, (e, c) in enumerate(uses))
                    plan.append(("relu_conv_bn", key, targets))
                elif name in SHARED_POOLS or (kind == "identity" and stride == 1):
                    self.mods[key] = MixedEdge((name,), C, stride, affine, track, pool_bn).ops[0]
                    targets = tuple(_Target(e.row, c, e.dst, 0) for e, c in uses)
                    plan.append(("shared", key, targets))
                else:
                    for e, c in uses:
                        ekey = f"{key}_r{e.row}"
                        self.mods[ekey] = MixedEdge((name,), C, stride, affine, track,
                                                    pool_bn).ops[0]
                        plan.append(("edge", ekey, (_Target(e.row, c, e.dst, 0),)))
            self.plan.append(plan)

    def forward(self, inputs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        states = [p(x) for p, x in zip(self.preprocess, inputs)]
        acc: list[torch.Tensor | None] = [None] * self.n_total
        for s in range(self.n_total):
            if s >= self.n_inputs:
                states.append(self._finish(s, acc[s], states))
            x = states[s]
            relu = None
            for kind, key, targets in self.plan[s]:
                if kind == "relu_conv_bn":
                    if relu is None:
                        relu = F.relu(x)
                    y = self.mods[key](relu)
                    y = y.view(y.shape[0], len(targets), self.C, *y.shape[2:])
                else:
                    y = self.mods[key](x)
                for t in targets:
                    term = y[:, t.slot] if kind == "relu_conv_bn" else y
                    w = weights[t.row, t.col]
                    acc[t.dst] = w * term if acc[t.dst] is None else \
                        torch.addcmul(acc[t.dst], w, term)
        return self._output(states)

    def _finish(self, n: int, total: torch.Tensor | None, states) -> torch.Tensor:
        if total is None:
            # every incoming candidate is `none`: the node is zero, at its source's stride
            s = self.any_edge[n]
            st = self.stride[s]
            total = states[s][:, :, ::st, ::st] * 0
        if self.mean:
            total = total / self.in_degree[n]
        return self.node_norm[n - self.n_inputs](total)

    @torch.no_grad()
    def load_from(self, cell) -> None:
        """Copy the weights and BN statistics of a plain ``SearchCell`` of the same cell type."""
        self.preprocess.load_state_dict(cell.preprocess.state_dict())
        self.node_norm.load_state_dict(cell.node_norm.state_dict())
        for plan in self.plan:
            for kind, key, targets in plan:
                if kind == "relu_conv_bn":
                    conv, bn = self.mods[key]
                    for t in targets:
                        src = cell.edges[t.row].ops[t.col]          # ReLUConvBN
                        sl = slice(t.slot * self.C, (t.slot + 1) * self.C)
                        conv.weight[sl].copy_(src.conv.weight)
                        if conv.bias is not None:
                            conv.bias[sl].copy_(src.conv.bias)
                        for name in ("weight", "bias", "running_mean", "running_var"):
                            dst_t = getattr(bn, name)
                            if dst_t is not None:
                                dst_t[sl].copy_(getattr(src.bn, name))
                        if bn.num_batches_tracked is not None:
                            bn.num_batches_tracked.copy_(src.bn.num_batches_tracked)
                else:
                    t = targets[0]
                    self.mods[key].load_state_dict(cell.edges[t.row].ops[t.col].state_dict())
