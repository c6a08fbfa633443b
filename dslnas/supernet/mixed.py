"""A supernet edge: every candidate op, mixed by weights supplied from outside."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import create_op, op_kind


class PoolBN(nn.BatchNorm2d):
    """The BN the DARTS search supernet puts after a pooling op: ``affine=False`` whatever the
    space's BN policy (as DARTS' code); its own class so that a transform can find it."""


class MixedEdge(nn.Module):
    def __init__(self, candidates: tuple[str, ...], C: int, stride: int, affine: bool,
                 track: bool, pool_bn: bool):
        super().__init__()
        self.candidates = candidates
        ops = []
        for name in candidates:
            op = create_op(name, C, C, stride, affine=affine, track=track)
            if pool_bn and op_kind(name) == "pool":
                # The DARTS search supernet normalises pooling outputs (never the child network).
                op = nn.Sequential(op, PoolBN(C, affine=False, track_running_stats=track))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        # `none` contributes w * 0 = 0 to the sum and 0 to every gradient: skipping it is exact
        # and saves its kernels. An edge with only `none` still runs it for the output's shape.
        self.run = [k for k, n in enumerate(candidates) if op_kind(n) != "zero"] or [0]

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``w``: this edge's weights, one per candidate (padding columns beyond are ignored)."""
        first, *rest = self.run
        out = w[first] * self.ops[first](x)
        for k in rest:
            out = out + w[k] * self.ops[k](x)
        return out
