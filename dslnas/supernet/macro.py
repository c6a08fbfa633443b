"""The macro network shared by the supernet and child networks: stem, cells, fixed blocks, head.

``MacroNetwork`` walks ``SpaceIR.blocks`` and asks a ``make_cell(block)`` callback for each cell,
so the search supernet and a discrete child network differ only in their cells.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..ir.model import CellBlock, HeadBlock, ResBlock, SpaceIR, StemBlock
from ..ops import FactorizedReduce, ReLUConvBN, ResNetBasicBlock


def make_stem(b: StemBlock) -> nn.Module:
    # The stem BN is affine even in search, as in the DARTS and NB201 originals.
    return nn.Sequential(nn.Conv2d(b.C_in, b.C_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(b.C_out))


def make_head(b: HeadBlock) -> nn.Module:
    layers = []
    pooled = False
    for name in b.layers:
        if name == "bn":
            # after `gap` the features are flat: a BN over them, not over maps
            layers.append(nn.BatchNorm1d(b.C_in) if pooled else nn.BatchNorm2d(b.C_in))
        elif name == "relu":
            layers.append(nn.ReLU(inplace=False))
        elif name == "gap":
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            pooled = True
        elif name == "linear":
            layers.append(nn.Linear(b.C_in, b.classes))
    return nn.Sequential(*layers)


def make_preprocess(kind: str, C_in: int, C: int, affine: bool, track: bool) -> nn.Module:
    if kind == "relu_conv_bn":
        return ReLUConvBN(C_in, C, 1, 1, 0, affine=affine, track=track)
    if kind == "factorized_reduce":
        return FactorizedReduce(C_in, C, affine=affine, track=track)
    return nn.Identity()


class MacroNetwork(nn.Module):
    """Runs the block list; cells receive their last ``n_inputs`` states, oldest first."""

    def __init__(self, ir: SpaceIR, make_cell: Callable[[CellBlock], nn.Module]):
        super().__init__()
        self.ir = ir
        self.kinds: list[str] = []
        self.cell_names: list[str] = []
        self.n_inputs: list[int] = []
        blocks = []
        for b in ir.blocks:
            if isinstance(b, StemBlock):
                blocks.append(make_stem(b))
            elif isinstance(b, CellBlock):
                blocks.append(make_cell(b))
            elif isinstance(b, ResBlock):
                blocks.append(ResNetBasicBlock(b.C_in, b.C_out, b.stride, affine=True, track=True))
            elif isinstance(b, HeadBlock):
                blocks.append(make_head(b))
            self.kinds.append(b.kind)
            self.cell_names.append(getattr(b, "cell", ""))
            self.n_inputs.append(ir.cell(b.cell).n_inputs if isinstance(b, CellBlock) else 1)
        self.blocks = nn.ModuleList(blocks)
        self.keep = max(self.n_inputs, default=1)    # the most states any cell reads

    def run(self, x: torch.Tensor, cell_call: Callable[[int, nn.Module, list], torch.Tensor],
            after_block: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        states = [x]
        for i, (kind, block) in enumerate(zip(self.kinds, self.blocks)):
            if kind == "cell":
                n = self.n_inputs[i]
                # Early cells see the first state in every slot (DARTS feeds the stem twice).
                ins = [states[max(0, len(states) - n + j)] for j in range(n)]
                out = cell_call(i, block, ins)
            else:
                out = block(states[-1])
            if i == 0:      # the input is a state only until the first block (as the IR plans)
                states = [out]
            else:
                states.append(out)
                if len(states) > self.keep:
                    states.pop(0)
            if after_block is not None:
                after_block(i, out)
        return states[-1]
